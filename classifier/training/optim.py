"""Optimisers, learning-rate schedules, class weights, sharpness-aware minimisation and gradient
clipping, as train.* params name them. Used by train and lr_find.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from classifier.runtime.errors import PipelineError
from classifier.models.registry import head_parameters
from classifier.params.train import TrainParams


def parameter_groups(model: nn.Module, params: TrainParams) -> list[dict]:
    """The trainable weights as optimiser groups: one group, or with train.features_lr_factor < 1 the
    head's (at train.lr, first: the group the history's lr column reports) and the features' (at lr ×
    the factor: fastai's discriminative rates). Each group's `lr_factor` is its share of train.lr."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise PipelineError("no trainable parameters: model.freeze leaves nothing to train")
    if params.features_lr_factor == 1:
        return [{"params": [p for _, p in trainable], "lr": params.lr, "lr_factor": 1.0}]
    head = head_parameters(model)
    in_head = [name in head for name, _ in trainable]
    groups = [{"params": [p for (_, p), h in zip(trainable, in_head) if h], "lr": params.lr, "lr_factor": 1.0},
              {"params": [p for (_, p), h in zip(trainable, in_head) if not h],
               "lr": params.lr * params.features_lr_factor, "lr_factor": params.features_lr_factor}]
    return [group for group in groups if group["params"]]


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    groups = parameter_groups(model, params)
    if params.optimizer in ("sgd", "sam"):  # sam: SGD stepping with the gradient of the perturbed weights
        if params.nesterov and params.momentum == 0:
            raise PipelineError("The 'train.nesterov' parameter needs train.momentum > 0. Got momentum 0 instead.")
        return torch.optim.SGD(groups, lr=params.lr, momentum=params.momentum, nesterov=params.nesterov,
                               weight_decay=params.weight_decay)
    if params.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=params.lr, weight_decay=params.weight_decay)
    return torch.optim.Adam(groups, lr=params.lr, weight_decay=params.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, params: TrainParams,
                   steps_per_epoch: int) -> tuple[torch.optim.lr_scheduler.LRScheduler | None, bool]:
    """The schedule and whether it steps per batch (onecycle) rather than per epoch. With
    train.warmup_epochs = w, the first w epochs climb linearly from lr/(w+1) to lr, and the schedule
    runs over the epochs after them."""
    lr = torch.optim.lr_scheduler
    warmup, epochs = params.warmup_epochs, params.epochs - params.warmup_epochs
    if params.scheduler == "onecycle":  # each group peaks at its own rate
        return lr.OneCycleLR(optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                             epochs=params.epochs, steps_per_epoch=steps_per_epoch), True
    if params.scheduler == "none" and not warmup:
        return None, False
    main = {"step": lambda: lr.StepLR(optimizer, step_size=params.step_size, gamma=params.gamma),
            "exponential": lambda: lr.ExponentialLR(optimizer, gamma=params.gamma),
            "cosine": lambda: lr.CosineAnnealingLR(optimizer, T_max=epochs),
            "none": lambda: lr.ConstantLR(optimizer, factor=1.0, total_iters=0)}[params.scheduler]()
    if not warmup:
        return main, False
    climb = lr.LinearLR(optimizer, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return lr.SequentialLR(optimizer, [climb, main], milestones=[warmup]), False


def warmed_decay(decay: float, step: int) -> float:
    """The average's decay at its `step`-th update after the first (which copies the weights): it
    warms up as timm's does, so that a short run's average is not stuck near its first weights
    (0.99 from the start: a 3-epoch run scored 87.7% against the raw weights' 96.1%)."""
    return min(decay, (1 + step) / (10 + step))


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """train.ema_decay: a copy of `model` whose weights (and batch-norm statistics) follow the trained
    ones as an exponential moving average, `update_parameters(model)` after every step, its decay
    warmed up (warmed_decay); None when 0."""
    if not decay:
        return None

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], done: torch.Tensor) -> None:
        weight = 1 - warmed_decay(decay, int(done))  # AveragedModel reads its count on the host anyway
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight)
        else:  # batch norm's step counters
            for mean, value in zip(averaged, current):
                mean.copy_(mean * (1 - weight) + value * weight)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def class_weights(choice, labels: np.ndarray, num_classes: int) -> torch.Tensor | None:
    """Loss weight per class: None, 'balanced' (n / (classes × count), as scikit-learn) or the given list."""
    if choice == "none":
        return None
    if choice == "balanced":
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        return torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)
    if len(choice) != num_classes:
        raise PipelineError(f"The 'train.class_weights' parameter must have one weight per class ({num_classes}). "
                            f"Got {len(choice)} instead.")
    return torch.tensor(choice, dtype=torch.float32)


@torch.no_grad()
def sam_ascend(parameters: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """Sharpness-aware minimisation's first half (Foret et al. 2021): move the weights by rho along
    their gradient, normalised, to the (approximately) worst point within radius rho; returns the
    moves, which sam_descend undoes once the gradient there has been taken."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else None
    moves = []
    for p in parameters:
        move = torch.zeros_like(p) if p.grad is None else p.grad * (rho / (norm + 1e-12))
        p.add_(move)
        moves.append(move)
    return moves


@torch.no_grad()
def sam_descend(parameters: list[torch.Tensor], moves: list[torch.Tensor]) -> None:
    """Back to the weights before sam_ascend; their gradients are now those of the perturbed point."""
    for p, move in zip(parameters, moves):
        p.sub_(move)


def clip_gradients(parameters: list[torch.Tensor], params: TrainParams) -> None:
    """Clip each gradient element to ±grad_clip_value, then the total norm to grad_clip_norm (0: off)."""
    if params.grad_clip_value > 0:
        nn.utils.clip_grad_value_(parameters, params.grad_clip_value)
    if params.grad_clip_norm > 0:
        nn.utils.clip_grad_norm_(parameters, params.grad_clip_norm)
