"""The training loop and inference, as plain PyTorch (no framework between reader and loop).

Data: when it fits, the whole split sits on the device as one uint8 N×C×H×W tensor and a batch
is an index slice (airbench style: no DataLoader, no workers); otherwise batches are gathered from
the memory-mapped array and copied over. Either way a batch is converted to float and normalised
on the device. On CUDA: bf16 autocast and channels_last (train.amp), optional torch.compile.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from .distributed import World, from_leader, min_all, sum_all
from .errors import PipelineError
from .gpus import CLAIMED_VARIABLE, claim_gpu
from .params import TrainParams
from .preprocess import Normalizer


def select_device(choice: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' or 'cuda:K' without a GPU is an error naming train.device.
    Which GPU a bare 'cuda' gets is claim_device's choice."""
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"The 'train.device' parameter is '{choice}' but no CUDA GPU is available: use auto or cpu")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda" if choice == "auto" else choice)


def claim_device(device: torch.device, log: Callable[[str], None] = print, local_rank: int = 0) -> torch.device:
    """The CPU as is; a CUDA device as a GPU this process holds alone (stages/lib/gpus.py): its pinned
    index, or the lowest free one, waiting while every GPU is busy with another experiment. A
    data-parallel worker takes the GPU its launcher claimed for its local rank."""
    if device.type != "cuda":
        return device
    claimed = os.environ.get(CLAIMED_VARIABLE)
    if claimed:
        index = int(claimed.split(",")[local_rank])
    else:
        index = claim_gpu(torch.cuda.device_count(), device.index, log=log)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N×H×W×C array (possibly memory-mapped) -> uint8 N×C×H×W tensor on `device`."""
    # np.array copies a read-only memory map into writable memory, which torch requires.
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous().to(device)


def fits_in_memory(nbytes: int, device: torch.device) -> bool:
    """Whether an array of `nbytes` can be resident on `device` with room to spare (half the free memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        import psutil
        free = psutil.virtual_memory().available
    return nbytes < free // 2


class Batches:
    """Images and labels of one split, served by index: resident on the device when they fit,
    else gathered from the (memory-mapped) array batch by batch. `rows` (sorted) keeps only those
    rows: a data-parallel process holds its shard alone."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, resident: bool | None = None,
                 rows: np.ndarray | None = None):
        self.device = device
        self.rows = rows
        labels = np.asarray(labels, dtype=np.int64)
        self.host_labels = torch.from_numpy(labels if rows is None else labels[rows])
        self.labels = self.host_labels.to(device)
        nbytes = images.nbytes if rows is None else images[:1].nbytes * len(rows)
        self.resident = fits_in_memory(nbytes, device) if resident is None else resident
        if self.resident:
            self.images = images_to_tensor(images if rows is None else images[rows], device)
        else:
            self.images = images

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 N×C×H×W images and labels of rows `index`, on the device. Streamed, `index` should
        be on the CPU (fit keeps the order there), so that gathering a batch never waits for the GPU."""
        if self.resident:
            return self.images[index], self.labels[index]
        rows = np.sort(index.cpu().numpy())  # sorted: sequential reads from the memory map
        stored = rows if self.rows is None else self.rows[rows]
        batch = torch.from_numpy(np.ascontiguousarray(self.images[stored])).permute(0, 3, 1, 2)
        labels = self.host_labels[torch.from_numpy(rows)]
        if self.device.type == "cuda":
            batch, labels = batch.pin_memory(), labels.pin_memory()
        return batch.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


@dataclass(frozen=True)
class OnlineAugment:
    """augment.online: per batch, on the training device, every image gets a random resized crop
    (area from crop_scale to 1, aspect 3:4 to 4:3) scaled back to full size, a random shift of up
    to `translate` of its side and, with hflip, a mirror half of the time: one affine resampling
    (bilinear, the border's values beyond the edge). Seeded: a CPU run repeats exactly."""
    crop_scale: float
    translate: float
    hflip: bool
    seed: int

    def generator(self, device: torch.device, rank: int = 0) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed + 7919 * rank)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Float N×C×H×W (normalised) -> the same, transformed."""
        n, device = images.shape[0], images.device
        uniform = torch.rand((n, 5), generator=generator, device=device)
        area = self.crop_scale + (1 - self.crop_scale) * uniform[:, 0]
        # Aspect 3:4 to 4:3, as far as the crop still fits: a full-area crop is square, the image itself.
        ratio = torch.exp((2 * uniform[:, 1] - 1) * torch.clamp(-torch.log(area), max=math.log(4 / 3)))
        width, height = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        # The crop's centre anywhere it fits, plus the shift (in grid units: the side is 2).
        shift_x = (1 - width) * (2 * uniform[:, 2] - 1) + 2 * self.translate * (2 * uniform[:, 3] - 1)
        shift_y = (1 - height) * (2 * uniform[:, 4] - 1) + 2 * self.translate * (
            2 * torch.rand(n, generator=generator, device=device) - 1)
        flip = torch.ones(n, device=device)
        if self.hflip:
            flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
        theta = torch.zeros((n, 2, 3), device=device)
        theta[:, 0, 0], theta[:, 0, 2] = width * flip, shift_x
        theta[:, 1, 1], theta[:, 1, 2] = height, shift_y
        grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
        return nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def online_augment(augment, seed: int) -> OnlineAugment | None:
    """The augment.online* params (the whole section or train's view of it) as an OnlineAugment drawing
    from `seed` (train.seed: the run's), or None when off."""
    if not augment.online:
        return None
    return OnlineAugment(augment.online_crop_scale, augment.online_translate, augment.online_hflip, seed)


def shard_rows(n: int, world: World, seed: int) -> np.ndarray | None:
    """The train rows this process holds: all of them (None) alone; else a seeded random 1/size share
    (random, because the stored order is by class), sorted for sequential reads."""
    if not world.distributed:
        return None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(order[world.rank::world.size])


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise PipelineError("no trainable parameters: model.freeze leaves nothing to train")
    if params.optimizer in ("sgd", "sam"):  # sam: SGD stepping with the gradient of the perturbed weights
        if params.nesterov and params.momentum == 0:
            raise PipelineError("The 'train.nesterov' parameter needs train.momentum > 0. Got momentum 0 instead.")
        return torch.optim.SGD(trainable, lr=params.lr, momentum=params.momentum, nesterov=params.nesterov,
                               weight_decay=params.weight_decay)
    if params.optimizer == "adamw":
        return torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    return torch.optim.Adam(trainable, lr=params.lr, weight_decay=params.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, params: TrainParams,
                   steps_per_epoch: int) -> tuple[torch.optim.lr_scheduler.LRScheduler | None, bool]:
    """The schedule and whether it steps per batch (onecycle) rather than per epoch."""
    lr = torch.optim.lr_scheduler
    if params.scheduler == "step":
        return lr.StepLR(optimizer, step_size=params.step_size, gamma=params.gamma), False
    if params.scheduler == "exponential":
        return lr.ExponentialLR(optimizer, gamma=params.gamma), False
    if params.scheduler == "cosine":
        return lr.CosineAnnealingLR(optimizer, T_max=params.epochs), False
    if params.scheduler == "onecycle":
        return lr.OneCycleLR(optimizer, max_lr=params.lr, epochs=params.epochs, steps_per_epoch=steps_per_epoch), True
    return None, False


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

    @property
    def images_per_second(self) -> float:
        return self.images_trained / self.train_seconds if self.train_seconds else 0.0

    def saved(self, checkpoint: str) -> tuple[dict, int]:
        """The weights and epoch train.checkpoint keeps: 'last' (the run's end) or 'best' (by train.monitor).

        'last' is the default: on a small val set the best epoch is a noisy pick that tests worse
        (benchmarks/parity.py: 65% vs 73% on 250 photo-like images; the last epoch matches a plain loop)."""
        return (self.best_state, self.best_epoch) if checkpoint == "best" else (self.last_state, len(self.history))


def _snapshot(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


@torch.no_grad()
def predict_logits(model: nn.Module, data: Batches | torch.Tensor, normalize: Normalizer,
                   batch_size: int = 1024, amp: bool = False) -> torch.Tensor:
    """Logits (N×classes, float32) in eval mode, for Batches or a uint8 N×C×H×W tensor."""
    model.eval()
    n = len(data)
    device = data.device
    chunks = []
    for start in range(0, n, batch_size):
        on_device = not isinstance(data, Batches) or data.resident  # streamed batches are gathered on the host
        index = torch.arange(start, min(start + batch_size, n), device=device if on_device else "cpu")
        x = data.get(index)[0] if isinstance(data, Batches) else data[index]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            chunks.append(model(_layout(normalize(x), amp)).float())
    return torch.cat(chunks) if chunks else torch.empty(0)


def _layout(x: torch.Tensor, amp: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if amp and x.is_cuda and x.dim() == 4 else x


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy


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


def fit(model: nn.Module, train: Batches, val: Batches | None, normalize: Normalizer, params: TrainParams,
        weights: torch.Tensor | None = None, log: Callable[[str], None] = print, world: World = World(),
        phase: str = "train", first_epoch: int = 1, total_epochs: int | None = None,
        augment: OnlineAugment | None = None, on_epoch: Callable[[EpochRecord], None] | None = None) -> FitResult:
    """Train `model` (already on the device) in place; returns the history and the best epoch's state.

    Batch order comes from a CPU generator seeded with params.seed, so a CPU run repeats exactly.
    The best epoch is the one with the best params.monitor (the first, on a tie): its weights are
    kept. Early stopping is separate: params.patience epochs without an improvement of more than
    params.min_delta stop the run. A NaN or infinite loss stops it with an error.

    Data-parallel (`world.size` > 1): `train` is this process's shard; every step each process takes
    its 1/size share of the params.batch_size images and DDP averages the gradients, so a step is one
    step on the whole batch. History and steps are of all processes together. Rank 0 alone evaluates
    `val` (None elsewhere) and shares the result, so every process stops at the same epoch; its
    weights are the ones returned (the others return empty states).

    A phase of a longer run (fine_tune) numbers its epochs from `first_epoch` of `total_epochs`.
    `augment` (augment.online) transforms every training batch on the device; val never.
    `on_epoch` sees each epoch's record as soon as it is done (train publishes live progress).
    """
    device = train.device
    amp = params.amp and device.type == "cuda"
    if amp:
        model = model.to(memory_format=torch.channels_last)
    trained = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel
        # A 1-channel conv weight's gradient comes back with other (equivalent: the dimension has size 1)
        # strides than DDP's bucket; DDP copies it and warns about speed, which does not apply here.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step_model = torch.compile(trained) if params.compile else trained
    n = len(train)
    total = int(sum_all(torch.tensor([n], device=device), world).item())
    steps_per_epoch = len(epoch_batches(torch.arange(total), params.batch_size))
    if world.distributed:
        # Every process must take the same number of steps (each one is an all-reduce).
        steps_per_epoch = max(1, min(steps_per_epoch, min_all(n, world, device)))
        _check_batch_norm_batches(model, min_all(n, world, device) // steps_per_epoch, params.batch_size, world.size)
    else:
        _check_batch_norm_batches(model, min(n, params.batch_size), params.batch_size)
    optimizer = make_optimizer(model, params)
    scheduler, per_step = make_scheduler(optimizer, params, steps_per_epoch)
    criterion = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device),
                                    label_smoothing=params.label_smoothing)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Rank 0 shuffles as a single process does; the others' shards get orders of their own.
    order = torch.Generator().manual_seed(params.seed + 1_000_003 * world.rank + (first_epoch - 1))
    draws = augment.generator(device, world.rank + 7 * first_epoch) if augment else None
    history: list[EpochRecord] = []
    steps: list[tuple[int, int, float, float, float]] = []
    best_value, best_epoch, best_state = None, 0, {}
    stop_reference, waited = None, 0  # early stopping's own best, moved only by more than min_delta
    train_seconds, images_trained = 0.0, 0
    last_epoch = first_epoch + params.epochs - 1
    for epoch in range(first_epoch, last_epoch + 1):
        started = time.perf_counter()
        train_mode(trained)
        epoch_lr = optimizer.param_groups[0]["lr"]
        step_losses, step_objectives, step_lrs = [], [], []
        correct = torch.zeros((), device=device, dtype=torch.long)
        shuffled = torch.randperm(n, generator=order)
        if train.resident:
            shuffled = shuffled.to(device)  # index slices of the resident tensor
        batches = (list(shuffled.tensor_split(steps_per_epoch)) if world.distributed
                   else epoch_batches(shuffled, params.batch_size))
        for batch in batches:
            images, y = train.get(batch)
            inputs = _layout(augment(normalize(images), draws) if augment else normalize(images), amp)

            def forward() -> tuple[torch.Tensor, torch.Tensor]:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = step_model(inputs).float()
                loss = criterion(out, y)
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
            # Kept on the device: no host sync per step.
            step_losses.append(nn.functional.cross_entropy(logits.detach(), y))
            step_objectives.append(objective.detach())
            step_lrs.append(optimizer.param_groups[0]["lr"])
            if per_step:
                scheduler.step()
            correct += (logits.detach().argmax(1) == y).sum()
        losses, objectives, sizes, correct_count = _epoch_totals(step_losses, step_objectives, batches, correct, world)
        train_seconds += time.perf_counter() - started  # _epoch_totals waited for the device
        images_trained += total
        train_loss = sum(l * s for l, s in zip(losses, sizes)) / total
        train_objective = sum(o * s for o, s in zip(objectives, sizes)) / total
        if not (math.isfinite(train_loss) and math.isfinite(train_objective)):
            raise PipelineError(f"training loss became {train_objective} in epoch {epoch}: lower train.lr "
                                f"(now {params.lr:g}) or check the data; no model was written")
        steps += [(len(steps) + i + 1, epoch, l, o, r)
                  for i, (l, o, r) in enumerate(zip(losses, objectives, step_lrs))]
        scores = [math.nan, math.nan]
        if world.leader:
            scores = list(loss_and_accuracy(predict_logits(model, val, normalize, amp=amp), val.labels))
        val_loss, val_accuracy = from_leader(scores, world, device)
        record = EpochRecord(epoch, epoch_lr, train_loss, train_objective, correct_count / total, val_loss, val_accuracy,
                             time.perf_counter() - started, phase)
        history.append(record)
        monitored = val_loss if params.monitor == "val_loss" else val_accuracy
        if _better(monitored, best_value, params.monitor):
            best_value, best_epoch = monitored, epoch
            best_state = _snapshot(model) if world.leader else {}
        if _better(monitored, stop_reference, params.monitor, params.min_delta):
            stop_reference, waited = monitored, 0
        else:
            waited += 1
        log(f"epoch {epoch:>3}/{total_epochs or last_epoch}  lr {epoch_lr:.4g}  train loss {train_loss:.4f} acc "
            f"{record.train_accuracy:.2%}  val loss {val_loss:.4f} acc {val_accuracy:.2%}"
            f"{'  *' if best_epoch == epoch else ''}  ({record.seconds:.1f}s)")
        if on_epoch is not None:
            on_epoch(record)
        if scheduler is not None and not per_step:
            scheduler.step()
        if params.patience and waited >= params.patience:
            log(f"early stopping: no {params.monitor} improvement of more than {params.min_delta:g} in "
                f"{params.patience} epochs; best epoch {best_epoch}")
            return FitResult(history, steps, best_epoch, best_state, True, _snapshot(model) if world.leader else {},
                             train_seconds, images_trained)
    return FitResult(history, steps, best_epoch, best_state, False, _snapshot(model) if world.leader else {},
                     train_seconds, images_trained)


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


def fine_tune(model: nn.Module, train: Batches, val: Batches | None, normalize: Normalizer, params: TrainParams,
              weights: torch.Tensor | None = None, log: Callable[[str], None] = print,
              world: World = World(), augment: OnlineAugment | None = None,
              on_epoch: Callable[[EpochRecord], None] | None = None) -> FitResult:
    """fit, then with params.finetune_epochs > 0 a second phase: every layer unfrozen (model.freeze:
    features trained the head alone) and trained on for finetune_epochs at finetune_lr, its schedule
    starting afresh. One history: epochs and steps numbered on, each epoch marked with its phase;
    the best epoch is the best of both phases."""
    if not params.finetune_epochs:
        return fit(model, train, val, normalize, params, weights, log, world, augment=augment, on_epoch=on_epoch)
    total = params.epochs + params.finetune_epochs
    head = fit(model, train, val, normalize, params, weights, log, world, phase="head", total_epochs=total,
               augment=augment, on_epoch=on_epoch)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    log(f"fine-tuning: every layer unfrozen, lr {params.finetune_lr:g} for {params.finetune_epochs} epochs")
    second = dataclasses.replace(params, lr=params.finetune_lr, epochs=params.finetune_epochs)
    tuned = fit(model, train, val, normalize, second, weights, log, world, phase="finetune",
                first_epoch=len(head.history) + 1, total_epochs=len(head.history) + params.finetune_epochs,
                augment=augment, on_epoch=on_epoch)
    monitored = [r.val_loss if params.monitor == "val_loss" else r.val_accuracy for r in head.history + tuned.history]
    best_head = monitored[head.best_epoch - 1]
    best_tuned = monitored[tuned.best_epoch - 1]
    tuned_wins = _better(best_tuned, best_head, params.monitor)
    offset = len(head.steps)
    return FitResult(head.history + tuned.history,
                     head.steps + [(step + offset, *rest) for step, *rest in tuned.steps],
                     tuned.best_epoch if tuned_wins else head.best_epoch,
                     tuned.best_state if tuned_wins else head.best_state,
                     tuned.stopped_early, tuned.last_state, head.train_seconds + tuned.train_seconds,
                     head.images_trained + tuned.images_trained)
