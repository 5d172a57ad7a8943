"""The training loop, as plain PyTorch (no framework between reader and loop): fit, two-phase
fine-tuning and the training step. Used by train, and by lr_find, whose range test is fit with a
StepRule (each step's rate, and when to stop).

Data: when it fits, the whole split sits on the device as one uint8 N×C×H×W tensor and a batch
is an index slice (airbench style: no DataLoader, no workers); otherwise batches are gathered from
the memory-mapped array and copied over (classifier/training/device_dataset.py). Either way a batch is converted to
float and normalised on the device. On CUDA: bf16 autocast and channels_last (train.amp), optional
torch.compile. The best epoch by train.monitor keeps its weights (early stopping: _Monitor); with
train.ema_decay the moving average is what is validated, returned and left in the model.
Data-parallel, each step takes its 1/size share of the batch, DDP averages the gradients, and the
history and steps are of all processes. A process training alone never calls into classifier/training/distributed.py: its reductions
are the values themselves. What a run has done lives in one TrainingState, whose state_dict is what
train keeps after every epoch to resume an interrupted run (classifier/training/resume.py).
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn

from classifier.runtime import paths
from classifier.data.artifacts import ArraySet, load_array_set, read_json
from classifier.augment.online import Draws, OnlineAugment
from classifier.training.device_dataset import DeviceDataset
from classifier.training.distributed import World, from_leader, gather_to_leader, min_all, sum_all
from classifier.runtime.errors import PipelineError
from classifier.models.inference import loss_and_accuracy, memory_layout, predict_logits
from classifier.models.registry import pretrained_input_stats
from classifier.training.optim import clip_gradients, make_optimizer, make_scheduler, sam_ascend, sam_descend, weight_average
from classifier.params.model import ModelParams
from classifier.params.train import TrainParams
from classifier.data.preprocessing import Normalizer, Preprocessing


# Seeds of the batch order: rank r of a data-parallel run draws from seed + r × this (a prime far above any
# train.seed a sweep uses), so no two processes' orders coincide; a second phase adds its first epoch.
RANK_SEED_STRIDE = 1_000_003


def load_training_inputs(model: ModelParams | None = None) -> tuple[list[str], Preprocessing, ArraySet, ArraySet]:
    """The classes, the preprocessing contract and the train and val arrays (memory-mapped), checked to
    agree. With `model` starting from pretrained weights (model.pretrained set), prepare.normalize:
    auto takes the constants those weights were trained with."""
    classes = read_json(paths.CLASSES_FILE)
    preprocessing = Preprocessing.read(paths.STATS_FILE)
    if model is not None and model.pretrained:
        preprocessing = preprocessing.for_weights(pretrained_input_stats(model.name, len(preprocessing.mean)))
    train_set = load_array_set(paths.AUGMENTED_DIR / "train")
    val_set = load_array_set(paths.PREPARED_DIR / "val")
    _, height, width, channels = train_set.images.shape
    if (channels, height, width) != preprocessing.input_shape:
        raise PipelineError(f"{paths.AUGMENTED_DIR} holds {channels}×{height}×{width} images but {paths.STATS_FILE} "
                            f"says {'×'.join(map(str, preprocessing.input_shape))}: rerun `dvc repro`")
    return classes, preprocessing, train_set, val_set


def shard_rows(n: int, world: World, seed: int) -> np.ndarray | None:
    """The train rows this process holds: all of them (None) alone; else a seeded random 1/size share
    (random, because the stored order is by class), sorted for sequential reads."""
    if not world.distributed:
        return None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(order[world.rank::world.size])


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float        # plain cross-entropy, comparable with val_loss
    train_objective: float   # what was minimised: with label smoothing, class weights and L1 when set
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float = field(default=0.0, compare=False)  # wall time of the epoch, validation included: not
                                                        # part of what makes two runs the same
    phase: str = "train"  # two-phase fine-tuning: head (features frozen), then finetune (everything)

    @classmethod
    def restored(cls, values: dict) -> EpochRecord:
        """From dataclasses.asdict (a saved state). The phase name interned, as the loop's own are: a
        pickle stores one string object once, so the checkpoint's bytes depend on which objects these are."""
        return cls(**{**values, "phase": sys.intern(values["phase"])})


STEP_COLUMNS = ("step", "epoch", "loss", "objective", "lr")


@dataclass
class FitResult:
    history: list[EpochRecord]
    steps: list[tuple[int, int, float, float, float]]  # STEP_COLUMNS of every batch
    best_epoch: int
    best_state: dict = field(repr=False)
    stopped_early: bool
    last_state: dict = field(repr=False, default_factory=dict)
    train_seconds: float = 0.0   # in the training steps (validation excluded), all epochs
    images_trained: int = 0      # by all processes together
    pruned: bool = False         # ended by on_epoch's verdict (a search's pruner), not by early stopping

    @property
    def images_per_second(self) -> float:
        return self.images_trained / self.train_seconds if self.train_seconds else 0.0

    def state(self) -> dict:
        """As plain values and tensors (a finished phase inside a resumable state)."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "history": [dataclasses.asdict(r) for r in self.history], "steps": [list(s) for s in self.steps]}

    @classmethod
    def from_state(cls, state: dict) -> FitResult:
        return cls(**{**state, "history": [EpochRecord.restored(r) for r in state["history"]],
                      "steps": [tuple(s) for s in state["steps"]]})

    def saved(self, checkpoint: str) -> tuple[dict, int]:
        """The weights and epoch train.checkpoint keeps: 'last' (the run's end) or 'best' (by train.monitor).

        'last' is the default: on a small val set the best epoch is a noisy pick that tests worse
        (benchmarks/parity.py: 65% vs 73% on 250 photo-like images; the last epoch matches a plain loop)."""
        return (self.best_state, self.best_epoch) if checkpoint == "best" else (self.last_state, len(self.history))


def _snapshot(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def epoch_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """The index batches of one epoch. A last batch of a single image joins the one before it:
    batch norm cannot normalise one image, and dropping it would leave that image out."""
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def _check_batch_norm_batches(model: nn.Module, smallest_batch: int, batch_size: int, processes: int = 1) -> None:
    trainable_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                       and any(p.requires_grad for p in m.parameters(recurse=False))]
    if trainable_norms and smallest_batch < 2:
        share = f" (shared by {processes} processes)" if processes > 1 else ""
        raise PipelineError(f"The 'train.batch_size' parameter must be >= {2 * processes} for a model with batch "
                            f"norm (model.batch_norm, or the architecture's own): a batch of one image has no batch "
                            f"statistics. Got {batch_size}{share} instead.")


def train_mode(model: nn.Module) -> None:
    """model.train(), except batch norm layers whose weights are frozen (model.freeze): they stay in
    eval mode, so their running statistics stay those of the frozen weights instead of drifting."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            weights = list(module.parameters(recurse=False))
            if weights and not any(w.requires_grad for w in weights):
                module.eval()


def _better(value: float, best: float | None, monitor: str, margin: float = 0.0) -> bool:
    if best is None:
        return True
    return value < best - margin if monitor == "val_loss" else value > best + margin


def for_training(model: nn.Module, params: TrainParams, device: torch.device) -> tuple[nn.Module, bool]:
    """The model in the memory layout training uses, and whether steps autocast (train.amp, on CUDA)."""
    amp = params.amp and device.type == "cuda"
    return (model.to(memory_format=torch.channels_last) if amp else model), amp


def training_criterion(params: TrainParams, weights: torch.Tensor | None, device: torch.device) -> nn.Module:
    """The loss training minimises: cross-entropy with the class weights and train.label_smoothing."""
    return nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device),
                               label_smoothing=params.label_smoothing)


def batch_inputs(images: torch.Tensor, labels: torch.Tensor, normalize: Normalizer, amp: bool,
                 augment: OnlineAugment | None = None, draws: Draws | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A uint8 batch as a training step takes it: normalised, augmented and mixed (OnlineAugment.batch),
    laid out for AMP; and its targets (soft ones when mixed)."""
    inputs, targets = augment.batch(images, labels, normalize, draws) if augment else (normalize(images), labels)
    return memory_layout(inputs, amp), targets


def train_step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, criterion: nn.Module,
               optimizer: torch.optim.Optimizer, trainable: list[torch.Tensor], params: TrainParams,
               amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a batch already normalised and laid out: the loss (label smoothing and
    class weights are the criterion's; `targets`: labels, or soft targets of mixed images), plus
    train.l1, backward, SAM's second pass with train.optimizer: sam, gradient clipping, the
    optimiser's step. Returns the logits and the objective (on the device)."""
    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(inputs).float()
        loss = criterion(out, targets)
        return out, (loss + params.l1 * sum(p.abs().sum() for p in trainable)) if params.l1 > 0 else loss
    logits, objective = forward()
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    if params.optimizer == "sam":  # the step takes the gradient at the worst nearby weights
        moves = sam_ascend(trainable, params.sam_rho)
        optimizer.zero_grad(set_to_none=True)
        forward()[1].backward()
        sam_descend(trainable, moves)
    clip_gradients(trainable, params)
    optimizer.step()
    return logits, objective


@dataclass
class _Steps:
    """The step machinery of one fit: an epoch's batches through it, the per-step records kept on the
    device (no host sync per step)."""
    step_model: nn.Module
    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    per_step: bool
    average: object  # the weights' moving average (train.ema_decay), or None
    params: TrainParams
    amp: bool

    def __post_init__(self) -> None:
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    @classmethod
    def build(cls, model: nn.Module, trained: nn.Module, params: TrainParams, weights: torch.Tensor | None,
              steps_per_epoch: int, amp: bool) -> _Steps:
        """The optimiser, schedule, criterion and (train.ema_decay) moving average of `params`."""
        optimizer = make_optimizer(model, params)
        scheduler, per_step = make_scheduler(optimizer, params, steps_per_epoch)
        return cls(torch.compile(trained) if params.compile else trained, model,
                   training_criterion(params, weights, next(model.parameters()).device), optimizer, scheduler,
                   per_step, weight_average(model, params.ema_decay), params, amp)

    def epoch(self, train: DeviceDataset, batches: list[torch.Tensor], normalize: Normalizer,
              augment: OnlineAugment | None, draws: Draws | None, within: _Within,
              after_step: Callable[[_Within], bool]) -> bool:
        """The epoch's steps from `within.step` on, their records (plain loss, objective, learning rate)
        and correct count kept in `within`, on the device; `after_step(within)` after each, True to end
        the run there (a StepRule's stop). Whether it did."""
        for batch in batches[within.step:]:
            images, y = train.get(batch)
            inputs, targets = batch_inputs(images, y, normalize, self.amp, augment, draws)
            logits, objective = train_step(self.step_model, inputs, targets, self.criterion, self.optimizer,
                                           self.trainable, self.params, self.amp)
            if self.average is not None:
                self.average.update_parameters(self.model)
            within.losses.append(nn.functional.cross_entropy(logits.detach(), y))
            within.objectives.append(objective.detach())
            within.lrs.append(self.optimizer.param_groups[0]["lr"])
            if self.per_step:
                self.scheduler.step()
            within.correct += (logits.detach().argmax(1) == y).sum()
            if after_step(within):
                return True
        return False

    def end_epoch(self) -> None:
        if self.scheduler is not None and not self.per_step:
            self.scheduler.step()

@dataclass
class _Monitor:
    """The best epoch by params.monitor (its weights kept) and early stopping's own reference, which
    moves only by more than params.min_delta."""
    params: TrainParams
    best_value: float | None = None
    best_epoch: int = 0
    best_state: dict = field(default_factory=dict)
    reference: float | None = None
    waited: int = 0

    def update(self, record: EpochRecord, judged: nn.Module, leader: bool) -> bool:
        """Take an epoch's scores; whether early stopping ends the run."""
        monitored = record.val_loss if self.params.monitor == "val_loss" else record.val_accuracy
        if _better(monitored, self.best_value, self.params.monitor):
            self.best_value, self.best_epoch = monitored, record.epoch
            self.best_state = _snapshot(judged) if leader else {}
        if _better(monitored, self.reference, self.params.monitor, self.params.min_delta):
            self.reference, self.waited = monitored, 0
        else:
            self.waited += 1
        return bool(self.params.patience) and self.waited >= self.params.patience

    def stop_line(self) -> str:
        return (f"early stopping: no {self.params.monitor} improvement of more than {self.params.min_delta:g} in "
                f"{self.params.patience} epochs; best epoch {self.best_epoch}")


@dataclass
class _Within:
    """An epoch under way: the batch order's generator state before the epoch drew its batches, the
    rate it began with, and the steps done with their records (on the device until kept)."""
    order: torch.Tensor
    lr: float
    correct: torch.Tensor
    losses: list[torch.Tensor] = field(default_factory=list)
    objectives: list[torch.Tensor] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    seconds: float = 0.0  # wall time spent in it before a resume

    @property
    def step(self) -> int:
        return len(self.losses)

@dataclass(frozen=True)
class Keeping:
    """Where fit hands the state of its run, to resume it after an interruption (stages/train.py: a
    StateKeeper): `save(state)` after every epoch that did not end the run and, within an epoch that
    lasts, about every `every` seconds (0: at epoch ends only). Every process passes one; only rank
    0's save is called."""
    save: Callable[[dict], None]
    every: float = 0.0


@dataclass
class _Saving:
    """When fit saves: after each epoch, and within one when keep.every has passed: by the clock alone;
    data-parallel, every so many steps (the last epoch's pace, from rank 0: all processes agree)."""
    keep: Keeping | None
    world: World
    device: torch.device
    last: float = field(default_factory=time.perf_counter)
    every_steps: int = 0

    def within_epoch(self, run: TrainingState, started: float, steps: int) -> bool:
        """After a step of the epoch under way (run.within, begun at `started`, of `steps`): save if due.
        Never ends the run (False)."""
        within = run.within
        if self.keep is None or within.step >= steps:  # the epoch's end saves anyway
            return False
        if self.world.distributed:
            due = bool(self.every_steps) and within.step % self.every_steps == 0
        else:
            due = bool(self.keep.every) and time.perf_counter() - self.last >= self.keep.every
        if due:
            self(run, within.seconds + time.perf_counter() - started, steps)
        return False

    def __call__(self, run: TrainingState, seconds: float = 0.0, steps: int = 0) -> None:
        """Keep the run's state: rank 0 gathers every process's part and hands the whole to keep.save."""
        if self.keep is None:
            return
        mine = run.rank_state(seconds, steps)
        every_rank = gather_to_leader(mine, self.world) if self.world.distributed else [mine]
        if self.world.leader:
            self.keep.save(run.state_dict(every_rank))
        self.last = time.perf_counter()

    def paced(self, steps: int, seconds: float) -> None:
        """Data-parallel: rank 0's steps between saves for the next epoch (its interval, should another
        node's TRAIN_STATE_MINUTES differ: every process must save at the same steps)."""
        if self.world.distributed and self.keep is not None:
            pace = steps * self.keep.every / max(seconds, 1e-9) if self.keep.every else 0.0
            pace = from_leader([pace], self.world, self.device)[0]
            self.every_steps = max(1, int(pace)) if pace else 0


@dataclass
class _Streams:
    """Every random stream of one process's fit: the batch order, the online augmentation's draws (on
    the device and the host) and torch's global generator (dropout), with their state for resume."""
    order: torch.Generator
    draws: Draws | None
    device: torch.device

    @classmethod
    def seeded(cls, seed: int, world: World, first_epoch: int, augment: OnlineAugment | None,
               device: torch.device) -> _Streams:
        # Rank 0 shuffles as a single process does; the others' shards get orders of their own.
        order = torch.Generator().manual_seed(seed + RANK_SEED_STRIDE * world.rank + (first_epoch - 1))
        # A stream of draws per process and phase: phase one's are 0..size-1, a second phase's (first_epoch
        # after the first phase's epochs) come after them, so no two processes or phases share one.
        draws = augment.draws(device, world.rank + world.size * (first_epoch - 1)) if augment else None
        return cls(order, draws, device)

@dataclass
class TrainingState:
    """Everything one fit has done and needs to go on, in one object, owned by the loop: the epochs'
    records and steps, time and images trained, the monitor (best epoch and its weights, early
    stopping's count), the step machinery (weights, optimiser, schedule, moving average), this
    process's random streams and the epoch under way. state_dict() is what resume keeps (rank 0's
    with every process's streams, gathered by _Saving); load_state_dict() puts all of it back."""
    machinery: _Steps
    streams: _Streams
    monitor: _Monitor
    history: list[EpochRecord] = field(default_factory=list)
    steps: list[tuple[int, int, float, float, float]] = field(default_factory=list)  # STEP_COLUMNS
    train_seconds: float = 0.0   # in the training steps, all epochs so far
    images_trained: int = 0
    pruned: bool = False         # ended by on_epoch's verdict
    within: _Within | None = None

    def rank_state(self, seconds: float = 0.0, steps: int = 0) -> dict:
        """This process's part: its random streams and, within an epoch (`seconds` spent in it, of
        `steps`), the steps done with their records."""
        streams = self.streams
        state = {"order": streams.order.get_state(), "torch": torch.get_rng_state()}
        if streams.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(streams.device)
        if streams.draws is not None:
            state |= {"device_draws": streams.draws.device.get_state(),
                      "host_draws": streams.draws.host.bit_generator.state}
        if (within := self.within) is not None:
            stacked = {name: torch.stack(values).cpu() if values else torch.zeros(0)
                       for name, values in (("losses", within.losses), ("objectives", within.objectives))}
            state["within"] = {"order": within.order, "lr": within.lr, "correct": within.correct.cpu(),
                               "lrs": list(within.lrs), "seconds": seconds, "step": within.step, "steps": steps,
                               **stacked}
        return state

    def state_dict(self, every_rank: list[dict]) -> dict:
        """The whole run's state, with `every_rank`'s rank_state (this one's alone when single)."""
        monitor, machinery = self.monitor, self.machinery
        return {"monitor": {"best_value": monitor.best_value, "best_epoch": monitor.best_epoch,
                            "best_state": monitor.best_state, "reference": monitor.reference,
                            "waited": monitor.waited},
                "history": [dataclasses.asdict(r) for r in self.history],
                "steps": [list(step) for step in self.steps], "train_seconds": self.train_seconds,
                "images_trained": self.images_trained,
                "model": _snapshot(machinery.model), "optimizer": machinery.optimizer.state_dict(),
                "scheduler": machinery.scheduler.state_dict() if machinery.scheduler is not None else None,
                "average": machinery.average.state_dict() if machinery.average is not None else None,
                "random": every_rank}

    def load_state_dict(self, state: dict, rank: int) -> None:
        """A kept state put back, this process's streams (rank `rank`'s) and epoch under way included."""
        machinery, streams, mine = self.machinery, self.streams, state["random"][rank]
        machinery.model.load_state_dict(state["model"])
        machinery.optimizer.load_state_dict(state["optimizer"])
        if machinery.scheduler is not None:
            machinery.scheduler.load_state_dict(state["scheduler"])
        if machinery.average is not None:
            machinery.average.load_state_dict(state["average"])
        streams.order.set_state(mine["order"])
        torch.set_rng_state(mine["torch"])
        if streams.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], streams.device)
        if streams.draws is not None:
            streams.draws.device.set_state(mine["device_draws"])
            streams.draws.host.bit_generator.state = mine["host_draws"]
        self.monitor = _Monitor(self.monitor.params, **state["monitor"])
        self.history = [EpochRecord.restored(r) for r in state["history"]]
        self.steps = [tuple(step) for step in state["steps"]]
        self.train_seconds, self.images_trained = state["train_seconds"], state["images_trained"]
        within, device = mine.get("within"), streams.device
        self.within = None if within is None else _Within(
            within["order"], within["lr"], within["correct"].to(device), list(within["losses"].to(device).unbind()),
            list(within["objectives"].to(device).unbind()), list(within["lrs"]), within["seconds"])

    def result(self, stopped: bool, last_state: dict) -> FitResult:
        return FitResult(self.history, self.steps, self.monitor.best_epoch, self.monitor.best_state, stopped,
                         last_state, self.train_seconds, self.images_trained, self.pruned)


@dataclass(frozen=True)
class Phase:
    """Which part of a run a fit is: its name (train; head, then finetune in two-phase fine-tuning),
    the number of its first epoch and the run's epochs in all."""
    name: str = "train"
    first_epoch: int = 1
    total_epochs: int | None = None


def _for_the_world(model: nn.Module, train: DeviceDataset, params: TrainParams,
                   world: World) -> tuple[nn.Module, bool, nn.Module, int, int]:
    """The model as it trains: (model, amp, the module that steps (DDP, compiled), the images of all
    processes, the steps an epoch), batch norm checked against the batches it will see."""
    device = train.device
    model, amp = for_training(model, params, device)
    trained = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel
        # A 1-channel conv weight's gradient comes back with other (equivalent: the dimension has size 1)
        # strides than DDP's bucket; DDP copies it and warns about speed, which does not apply here.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    n = len(train)
    total = int(sum_all(torch.tensor([n], device=device), world).item()) if world.distributed else n
    steps_per_epoch = len(epoch_batches(torch.arange(total), params.batch_size))
    if world.distributed:
        # Every process must take the same number of steps (each one is an all-reduce).
        steps_per_epoch = max(1, min(steps_per_epoch, min_all(n, world, device)))
        _check_batch_norm_batches(model, min_all(n, world, device) // steps_per_epoch, params.batch_size, world.size)
    else:
        _check_batch_norm_batches(model, min(n, params.batch_size), params.batch_size)
    return model, amp, trained, total, steps_per_epoch


class StepRule(Protocol):
    """A run whose steps decide (lr_find's range test): after each step, with its plain loss (on the
    device) and the optimiser, set the rate of the next one, and say whether the run ends here."""

    def after(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool: ...


@dataclass(frozen=True)
class FitData:
    """What a fit trains on: this process's `train` rows (data-parallel: its shard), `val` (scored by
    rank 0 alone; None: a range test), `normalize` (uint8 batch -> the model's input), the class
    `weights` of the loss, and `augment`: what is done to every batch, on the device."""
    train: DeviceDataset
    val: DeviceDataset | None
    normalize: Normalizer
    weights: torch.Tensor | None = None
    augment: OnlineAugment | None = None


@dataclass(frozen=True)
class Hooks:
    """What a fit tells its caller and asks it: `log` each line; `on_epoch(history)` after each epoch,
    with the run's epochs so far, resumed ones and a first phase's included (live progress; True from
    rank 0's ends the run there, pruned); `keep` takes the run's state to resume from; `rule` sets each
    step's rate and may end the run after any step (lr_find)."""
    log: Callable[[str], None] = print
    on_epoch: Callable[[list[EpochRecord]], object] | None = None
    keep: Keeping | None = None
    rule: StepRule | None = None


def fit(model: nn.Module, data: FitData, params: TrainParams, hooks: Hooks = Hooks(), world: World = World(),
        phase: Phase = Phase(), resume: dict | None = None) -> FitResult:
    """Train `model` (already on the device) in place; returns the history and the best epoch's state.

    The batch order comes from params.seed, so a CPU run repeats exactly; a NaN loss is an error.
    Data-parallel, rank 0 alone returns weights. `phase`: a part of a longer run (fit_phases).
    `resume`: a state `hooks.keep` took (after each epoch, and within long ones), continued exactly."""
    train, val, normalize, augment = data.train, data.val, data.normalize, data.augment
    log, on_epoch, keep, rule = hooks.log, hooks.on_epoch, hooks.keep, hooks.rule
    model, amp, trained, total, steps_per_epoch = _for_the_world(model, train, params, world)
    steps_of = _Steps.build(model, trained, params, data.weights, steps_per_epoch, amp)
    judged = steps_of.average.module if steps_of.average is not None else model  # validated and kept
    streams = _Streams.seeded(params.seed, world, phase.first_epoch, augment, train.device)
    run, saving = TrainingState(steps_of, streams, _Monitor(params)), _Saving(keep, world, train.device)
    if resume is not None:
        run.load_state_dict(resume, world.rank)
    last_epoch, stopped = phase.first_epoch + params.epochs - 1, False
    for epoch in range(phase.first_epoch + len(run.history), last_epoch + 1):
        started = time.perf_counter()
        train_mode(trained)
        within = run.within = run.within or _Within(
            streams.order.get_state(), steps_of.optimizer.param_groups[0]["lr"],
            torch.zeros((), device=train.device, dtype=torch.long))
        streams.order.set_state(within.order)  # a resumed epoch draws its batches again
        batches = _epoch_order(train, streams.order, steps_per_epoch, params.batch_size, world)
        if steps_of.epoch(train, batches, normalize, augment, streams.draws, within, lambda now: bool(
                rule and rule.after(now.losses[-1], steps_of.optimizer)) or saving.within_epoch(
                run, started, len(batches))):
            break  # the rule ended the run
        losses, objectives, sizes, correct_count = _epoch_totals(within.losses, within.objectives, batches,
                                                                 within.correct, world)
        run.train_seconds += within.seconds + time.perf_counter() - started  # _epoch_totals waited for the device
        run.images_trained += total
        train_loss, train_objective = _epoch_means(losses, objectives, sizes, total, epoch, params.lr)
        run.steps += [(len(run.steps) + i + 1, epoch, l, o, r)
                      for i, (l, o, r) in enumerate(zip(losses, objectives, within.lrs))]
        record = EpochRecord(epoch, within.lr, train_loss, train_objective, correct_count / total,
                             *_validate(judged, val, normalize, amp, world),
                             within.seconds + time.perf_counter() - started, phase.name)
        run.history.append(record)
        stopped, run.within = run.monitor.update(record, judged, world.leader), None
        log(_epoch_line(record, phase.total_epochs or last_epoch, run.monitor.best_epoch == epoch))
        run.pruned = _ends_here(on_epoch, run.history, world, train.device)
        steps_of.end_epoch()
        if stopped or run.pruned:
            log(run.monitor.stop_line() if stopped else f"pruned after epoch {epoch}: the search stopped this run")
            break
        saving(run)
        saving.paced(len(batches), record.seconds)
    if steps_of.average is not None:  # the model goes on (a second phase, the checkpoint) with the averaged weights
        model.load_state_dict(judged.state_dict())
    return run.result(stopped, _snapshot(model) if world.leader else {})


def _ends_here(on_epoch: Callable[[list[EpochRecord]], object] | None, history: list[EpochRecord], world: World,
               device: torch.device) -> bool:
    """on_epoch's verdict on the epoch just done (rank 0's, where it runs, shared with every process):
    True ends the run (a search pruning it)."""
    verdict = bool(on_epoch(history)) if on_epoch is not None else False
    return bool(from_leader([float(verdict)], world, device)[0]) if world.distributed else verdict


def _epoch_line(record: EpochRecord, epochs: int, best: bool) -> str:
    return (f"epoch {record.epoch:>3}/{epochs}  lr {record.lr:.4g}  train loss {record.train_loss:.4f} acc "
            f"{record.train_accuracy:.2%}  val loss {record.val_loss:.4f} acc {record.val_accuracy:.2%}"
            f"{'  *' if best else ''}  ({record.seconds:.1f}s)")


def _epoch_order(train: DeviceDataset, order: torch.Generator, steps_per_epoch: int, batch_size: int,
                 world: World) -> list[torch.Tensor]:
    """An epoch's batches of row indices, shuffled by `order` (on the device when the data is)."""
    shuffled = torch.randperm(len(train), generator=order)
    if train.resident:
        shuffled = shuffled.to(train.device)  # index slices of the resident tensor
    return (list(shuffled.tensor_split(steps_per_epoch)) if world.distributed
            else epoch_batches(shuffled, batch_size))


def _epoch_means(losses: list[float], objectives: list[float], sizes: list[int], total: int, epoch: int,
                 lr: float) -> tuple[float, float]:
    """The epoch's mean plain loss and objective over its steps; NaN or infinite stops the run."""
    train_loss = sum(l * s for l, s in zip(losses, sizes)) / total
    train_objective = sum(o * s for o, s in zip(objectives, sizes)) / total
    if not (math.isfinite(train_loss) and math.isfinite(train_objective)):
        raise PipelineError(f"training loss became {train_objective} in epoch {epoch}: lower train.lr "
                            f"(now {lr:g}) or check the data; no model was written")
    return train_loss, train_objective


def _validate(judged: nn.Module, val: DeviceDataset | None, normalize: Normalizer, amp: bool,
              world: World) -> tuple[float, float]:
    """Val loss and accuracy, scored by rank 0 and shared with every process."""
    scores = [math.nan, math.nan]
    if world.leader and val is not None:  # none: a range test
        scores = list(loss_and_accuracy(predict_logits(judged, val, normalize, amp=amp), val.labels))
    return from_leader(scores, world, next(judged.parameters()).device) if world.distributed else scores


def _epoch_totals(step_losses: list[torch.Tensor], step_objectives: list[torch.Tensor], batches: list[torch.Tensor],
                  correct: torch.Tensor, world: World) -> tuple[list[float], list[float], list[int], int]:
    """Per step: mean loss, mean objective and images, over all processes; and the images classified
    right. One transfer (and, data-parallel, one all-reduce) per epoch."""
    sizes = [len(batch) for batch in batches]
    if not world.distributed:
        return (torch.stack(step_losses).cpu().tolist(), torch.stack(step_objectives).cpu().tolist(), sizes,
                int(correct.item()))
    weight = torch.tensor(sizes, dtype=torch.float64, device=correct.device)
    packed = torch.cat([torch.stack(step_losses).double() * weight, torch.stack(step_objectives).double() * weight,
                        weight, correct.double().view(1)])
    packed = sum_all(packed, world).cpu().tolist()
    steps = len(sizes)
    loss_sums, objective_sums, totals = packed[:steps], packed[steps:2 * steps], packed[2 * steps:3 * steps]
    return ([l / t for l, t in zip(loss_sums, totals)], [o / t for o, t in zip(objective_sums, totals)],
            [int(t) for t in totals], int(packed[-1]))


def fit_phases(model: nn.Module, data: FitData, params: TrainParams, hooks: Hooks = Hooks(), world: World = World(),
               resume: dict | None = None) -> FitResult:
    """A whole training run, the entry point of train: fit, then with params.finetune_epochs > 0 a
    second phase: every layer unfrozen (model.freeze: features trained the head alone) and trained on
    for finetune_epochs at finetune_lr, its schedule starting afresh (without a warm-up). One history:
    epochs and steps numbered on, each epoch marked with its phase; the best epoch is the best of both.
    `keep` and `resume` as fit's, their state saying which phase it is of (and the finished head's result)."""
    def for_phase(name: str, earlier: FitResult | None = None) -> Hooks:
        """`hooks` as phase `name` takes them: its kept state says the phase (and the finished head's
        result); on_epoch is told the head's epochs before its own (epochs number on)."""
        keep, on_epoch, phase = hooks.keep, hooks.on_epoch, hooks
        if keep is not None:
            phase = dataclasses.replace(phase, keep=Keeping(lambda state: keep.save(
                {"phase": name, "earlier": earlier.state() if earlier else None, "fit": state}), keep.every))
        if on_epoch is not None and earlier is not None:
            phase = dataclasses.replace(phase, on_epoch=lambda history: on_epoch(earlier.history + history))
        return phase

    def resumed(name: str) -> dict | None:
        return resume["fit"] if resume is not None and resume["phase"] == name else None

    if not params.finetune_epochs:
        return fit(model, data, params, for_phase("train"), world, resume=resumed("train"))
    total = params.epochs + params.finetune_epochs
    if resumed("finetune") is not None:
        head = FitResult.from_state(resume["earlier"])
    else:
        head = fit(model, data, params, for_phase("head"), world, Phase("head", 1, total), resumed("head"))
    if head.pruned:
        return head
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    hooks.log(f"fine-tuning: every layer unfrozen, lr {params.finetune_lr:g} for {params.finetune_epochs} epochs")
    second = dataclasses.replace(params, lr=params.finetune_lr, epochs=params.finetune_epochs, warmup_epochs=0)
    tuned = fit(model, data, second, for_phase("finetune", head), world,
                Phase("finetune", len(head.history) + 1, len(head.history) + params.finetune_epochs),
                resumed("finetune"))
    return _joined(head, tuned, params.monitor)


def kept_within(state: dict) -> tuple[int, int, int]:
    """(epochs done, steps done, steps) of the epoch under way when a fit_phases state was kept; steps
    (0, 0) when it was kept at an epoch's end. The state's layout is the loop's: callers ask here, not in it."""
    within = state["fit"]["random"][0].get("within") or {}
    return len(resumed_history(state)), within.get("step", 0), within.get("steps", 0)


_KEPT_FIELDS = {  # what load_state_dict reads of a kept fit, by level
    "": ("monitor", "history", "steps", "train_seconds", "images_trained", "model", "optimizer", "scheduler",
         "average", "random"),
    "monitor": ("best_value", "best_epoch", "best_state", "reference", "waited"),
    "optimizer": ("state", "param_groups"),
}


def check_kept(state: dict) -> None:
    """Raises ValueError naming the first field a fit_phases state lacks (a state of this run's
    identity whose file lost a field: refused before any of it is put back, not a KeyError halfway)."""
    def need(where: str, value, fields) -> None:
        if not isinstance(value, dict):
            raise ValueError(f"field '{where}' is not a mapping")
        missing = [f for f in fields if f not in value]
        if missing:
            raise ValueError(f"missing field '{where + '.' if where else ''}{missing[0]}'")
    need("", state, ("phase", "earlier", "fit"))
    need("fit", state["fit"], _KEPT_FIELDS[""])
    for level in ("monitor", "optimizer"):
        need(f"fit.{level}", state["fit"][level], _KEPT_FIELDS[level])
    if not isinstance(state["fit"]["random"], list) or not state["fit"]["random"]:
        raise ValueError("field 'fit.random' holds no process's streams")
    for rank, streams in enumerate(state["fit"]["random"]):
        need(f"fit.random[{rank}]", streams, ("order", "torch"))
    if state["earlier"] is not None:
        need("earlier", state["earlier"], [f.name for f in dataclasses.fields(FitResult)])
    try:
        resumed_history(state)  # every epoch's record reads back
    except (KeyError, TypeError) as exc:
        raise ValueError(f"an epoch's record does not read back ({exc})") from None


def resumed_history(state: dict | None) -> list[EpochRecord]:
    """The epochs a fit_phases state has done, both phases'."""
    if state is None:
        return []
    earlier = state["earlier"]["history"] if state["earlier"] else []
    return [EpochRecord.restored(r) for r in earlier + state["fit"]["history"]]


def _joined(head: FitResult, tuned: FitResult, monitor: str) -> FitResult:
    """The two phases' results as one run's: the best epoch is the better of their best."""
    monitored = [r.val_loss if monitor == "val_loss" else r.val_accuracy for r in head.history + tuned.history]
    tuned_wins = _better(monitored[tuned.best_epoch - 1], monitored[head.best_epoch - 1], monitor)  # epochs number on
    offset = len(head.steps)
    return FitResult(head.history + tuned.history,
                     head.steps + [(step + offset, *rest) for step, *rest in tuned.steps],
                     tuned.best_epoch if tuned_wins else head.best_epoch,
                     tuned.best_state if tuned_wins else head.best_state,
                     tuned.stopped_early, tuned.last_state, head.train_seconds + tuned.train_seconds,
                     head.images_trained + tuned.images_trained, tuned.pruned)
