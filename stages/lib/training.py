"""The training loop and inference, as plain PyTorch (no framework between reader and loop).

The whole data set sits on the device as one uint8 N×C×H×W tensor; a batch is an index slice,
converted to float and normalised on the fly (airbench style: no DataLoader, no workers).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import PipelineError
from .params import TrainParams


def select_device(choice: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is an error naming train.device."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise PipelineError("The 'train.device' parameter is 'cuda' but no CUDA GPU is available: use auto or cpu")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N×H×W×C array (possibly memory-mapped) -> uint8 N×C×H×W tensor on `device`."""
    # np.array copies a read-only memory map into writable memory, which torch requires.
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous().to(device)


@dataclass(frozen=True)
class Normalizer:
    """(pixel / 255 - mean) / std per channel; mean and std measured on the training split."""
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=batch.device).view(shape)
        std = torch.tensor(self.std, device=batch.device).view(shape)
        return (batch.float() / 255.0 - mean) / std


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum,
                               weight_decay=params.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, params: TrainParams) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Stepped once per epoch."""
    if params.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=params.step_size, gamma=params.gamma)
    return None


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, normalize: Normalizer, batch_size: int = 1024) -> torch.Tensor:
    """Logits (N×classes, float32) for a uint8 N×C×H×W tensor, in eval mode."""
    model.eval()
    chunks = [model(normalize(images[i:i + batch_size])).float() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy


def fit(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor,
        val_y: torch.Tensor, normalize: Normalizer, params: TrainParams,
        log: Callable[[str], None] = print) -> list[EpochRecord]:
    """Train `model` in place for params.epochs; returns one record per epoch.

    Tensors are already on the model's device. Batch order comes from a CPU generator seeded
    with params.seed, so a CPU run repeats exactly. A NaN or infinite loss stops with an error.
    """
    optimizer = make_optimizer(model, params)
    scheduler = make_scheduler(optimizer, params)
    order = torch.Generator().manual_seed(params.seed)
    history: list[EpochRecord] = []
    n = len(train_x)
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=train_x.device)
        correct = torch.zeros((), device=train_x.device, dtype=torch.long)
        for batch in torch.randperm(n, generator=order).to(train_x.device).split(params.batch_size):
            x, y = normalize(train_x[batch]), train_y[batch]
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Accumulate on the device: no host sync per step.
            loss_sum += loss.detach() * len(batch)
            correct += (logits.detach().argmax(1) == y).sum()
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            raise PipelineError(f"training loss became {train_loss} in epoch {epoch}: lower train.lr "
                                f"(now {params.lr:g}) or check the data; no model was written")
        val_loss, val_accuracy = loss_and_accuracy(predict_logits(model, val_x, normalize), val_y)
        record = EpochRecord(epoch, lr, train_loss, correct.item() / n, val_loss, val_accuracy)
        history.append(record)
        log(f"epoch {epoch:>3}/{params.epochs}  lr {lr:.4g}  train loss {train_loss:.4f} acc "
            f"{record.train_accuracy:.2%}  val loss {val_loss:.4f} acc {val_accuracy:.2%}  "
            f"({time.perf_counter() - started:.1f}s)")
        if scheduler is not None:
            scheduler.step()
    return history
