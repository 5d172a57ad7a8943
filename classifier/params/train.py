"""The train section: the optimiser, the schedule, the regularisers, the device (read by train and
lr_find).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from classifier.runtime.errors import PipelineError
from .checks import Invalid, MAX_COUNT, MAX_SEED, MAX_WIDTH, boolean, choice, number, spec


def _device(value: Any) -> str:
    if value in ("auto", "cpu", "cuda") or (isinstance(value, str) and re.fullmatch(r"cuda:\d{1,3}", value)):
        return value
    raise Invalid("auto, cpu, cuda or cuda:K (K: a GPU index)")


def _endpoint(value: Any) -> str:
    """'' or host:port, the address torchrun's static rendezvous listens on."""
    if value == "" or (isinstance(value, str) and re.fullmatch(r"[\w.\-]+:\d{1,5}", value)
                       and 0 < int(value.rsplit(":", 1)[1]) < 65536):
        return value
    raise Invalid("host:port (e.g. 10.0.0.1:29400), or \"\" for one machine")


def _class_weights(value: Any) -> str | tuple[float, ...]:
    what = "none, balanced, or a list of per-class weights > 0"
    if value in ("none", "balanced"):
        return value
    if isinstance(value, list) and value:
        try:
            return tuple(number(float, gt=0, le=1e6)(v) for v in value)
        except Invalid:
            pass
    raise Invalid(what)


@dataclass(frozen=True)
class TrainParams:
    SECTION: ClassVar[str] = "train"
    optimizer: str = spec(choice("sgd", "adam", "adamw", "sam"),
                          "sgd, adam, adamw, or sam (sharpness-aware minimisation over sgd: two passes per step)")
    lr: float = spec(number(float, gt=0, le=100), "learning rate (onecycle: the peak)")
    momentum: float = spec(number(float, ge=0, lt=1), "sgd, sam: momentum")
    nesterov: bool = spec(boolean, "sgd, sam: Nesterov momentum")
    sam_rho: float = spec(number(float, gt=0, le=100), "sam: radius of the weight perturbation")
    weight_decay: float = spec(number(float, ge=0, le=100), "L2 weight decay (adamw: decoupled)")
    l1: float = spec(number(float, ge=0, le=100), "L1 penalty: this times the sum of |weights| is added to the loss")
    epochs: int = spec(number(int, ge=1, le=MAX_COUNT), "passes over the training set (at most, with early stopping)")
    finetune_epochs: int = spec(number(int, ge=0, le=MAX_COUNT),
                                "model.freeze: features only: epochs of a second phase with every layer unfrozen (0: none)")
    finetune_lr: float = spec(number(float, gt=0, le=100), "the second phase's learning rate (its schedule starts afresh)")
    features_lr_factor: float = spec(number(float, gt=0, le=1),
                                     "the features' learning rate as a fraction of the head's (discriminative rates "
                                     "for fine-tuning a pretrained model; 1: one rate)")
    batch_size: int = spec(number(int, ge=1, le=MAX_WIDTH), "images per optimisation step")
    scheduler: str = spec(choice("none", "step", "exponential", "cosine", "onecycle"), "learning-rate schedule")
    step_size: int = spec(number(int, ge=1, le=MAX_COUNT), "step: epochs between learning-rate drops")
    gamma: float = spec(number(float, gt=0, le=1), "step, exponential: factor of each learning-rate drop")
    warmup_epochs: int = spec(number(int, ge=0, le=MAX_COUNT),
                              "epochs of linear learning-rate warm-up (from lr/(n+1) up to lr) before the "
                              "schedule, which then runs over the remaining epochs (0: none; not with onecycle)")
    grad_clip_norm: float = spec(number(float, ge=0, le=1e9), "clip the gradients' total norm to this (0: off)")
    grad_clip_value: float = spec(number(float, ge=0, le=1e9), "clip each gradient element to +-this (0: off)")
    label_smoothing: float = spec(number(float, ge=0, lt=1), "cross-entropy label smoothing")
    mixup_alpha: float = spec(number(float, ge=0, le=100),
                              "mixup: each batch blended with a shuffled copy, weight ~ Beta(α, α), soft targets "
                              "alike (0: off; 0.2 to 0.4 is usual)")
    cutmix_alpha: float = spec(number(float, ge=0, le=100),
                               "cutmix: a box of a shuffled copy pasted, its share ~ Beta(α, α), soft targets "
                               "alike (0: off; 1 is usual; with mixup, each half of the batches)")
    ema_decay: float = spec(number(float, ge=0, lt=1),
                            "exponential moving average of the weights, updated every step, its decay warmed up as "
                            "min(ema_decay, (1 + t) / (10 + t)) at step t so that short runs gain too; when on (> 0) "
                            "the averaged weights are the ones validated, saved and evaluated (0: off; 0.99 to 0.999)")
    class_weights: Any = spec(_class_weights, "loss weight per class: none, balanced (inverse frequency) or a list")
    patience: int = spec(number(int, ge=0, le=MAX_COUNT),
                         "early stopping: epochs without improvement before stopping (0: off)")
    monitor: str = spec(choice("val_loss", "val_accuracy"), "what picks the best epoch and drives early stopping")
    checkpoint: str = spec(choice("last", "best"),
                           "the epoch models/model.pt keeps: the last, or the best by train.monitor")
    min_delta: float = spec(number(float, ge=0, le=1e9), "early stopping: the least change that counts as improvement")
    seed: int = spec(number(int, ge=0, le=MAX_SEED), "seed of weight init and batch order")
    device: str = spec(_device, "auto (a free GPU when there is one, else the CPU), cpu, cuda (a free GPU), "
                               "or cuda:K (GPU K)")
    processes: int = spec(number(int, ge=1, le=1024),
                          "data-parallel processes per machine, started by torchrun (CUDA: one GPU each)")
    nodes: int = spec(number(int, ge=1, le=1024),
                      "machines training together (the others run torchrun: docs/scaling-out.md)")
    rendezvous: str = spec(_endpoint, "nodes > 1: host:port of this machine, where the other nodes meet it")
    cpu_threads: int = spec(number(int, ge=0, le=1024),
                            "N >= 1: PyTorch's kernels held to AVX2 (ATen, oneDNN, MKL) and N threads in train (shared by "
                            "its processes × nodes) and evaluate, so that the model and the scores are the same on any "
                            "x86-64 CPU with AVX2 (shown by forcing other instruction sets and one core on one CPU), at "
                            "the native kernels' speed (docs/benchmarks.md); 0: the fastest kernels the CPU has and all "
                            "its cores, results that differ by CPU type")
    amp: bool = spec(boolean, "CUDA only: bf16 autocast and channels_last")
    compile: bool = spec(boolean, "torch.compile the model (slow start, faster steps on a GPU)")

    def __post_init__(self) -> None:
        if self.nodes > 1 and not self.rendezvous:
            raise PipelineError(f"The 'train.rendezvous' parameter must be this machine's host:port when "
                                f"train.nodes is {self.nodes}. Got \"\" instead.")
        if self.processes > 1 and self.device.startswith("cuda:"):
            raise PipelineError(f"The 'train.device' parameter pins one GPU ({self.device}), but train.processes "
                                f"is {self.processes} (one GPU each): use cuda or auto")
        if self.batch_size < self.processes * self.nodes:
            raise PipelineError(f"The 'train.batch_size' parameter must be at least train.processes × train.nodes "
                                f"({self.processes * self.nodes}): it is the batch of all processes together. "
                                f"Got {self.batch_size} instead.")
        if self.warmup_epochs and self.scheduler == "onecycle":
            raise PipelineError(f"The 'train.warmup_epochs' parameter does not apply to train.scheduler: onecycle, "
                                f"which warms up by itself. Got {self.warmup_epochs} instead.")
        if self.warmup_epochs >= self.epochs:
            raise PipelineError(f"The 'train.warmup_epochs' parameter must be less than train.epochs ({self.epochs}): "
                                f"the schedule runs after the warm-up. Got {self.warmup_epochs} instead.")


def check_with_model(train: TrainParams, freeze: str) -> None:
    """The train rules that read the model section too (model.freeze)."""
    if train.finetune_epochs and freeze != "features":
        raise PipelineError(f"The 'train.finetune_epochs' parameter needs model.freeze: features (the head is trained "
                            f"first, then every layer). Got {train.finetune_epochs} with model.freeze: {freeze}")
