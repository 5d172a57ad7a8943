"""Learning-rate range test: which train.lr to try, in one short run instead of dozens.

    python -m tools.lr_find [--steps 200] [--start 1e-6] [--end 10]

Trains the configured model (model and train params) on the augmented train split, with the
learning rate growing exponentially from --start to --end, one step per batch, until the loss
diverges. Writes plots/lr_find/lr_find.csv (lr, loss, smoothed loss per step) and lr_find.png
(loss against the learning rate, log scale, the suggestion marked) and prints the suggested
train.lr with the command to use it. Not a DVC stage: run it after `dvc repro` (it reads
data/augmented), before choosing the learning rate.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from classifier.runtime import paths
from classifier.augment.online import online_augment
from classifier.training.device_dataset import DeviceDataset
from classifier.training.devices import claim_device, release_all, select_device
from classifier.runtime.errors import PipelineError, run_stage
from classifier.models.registry import InputShape, build_model
from classifier.training.optim import class_weights
from classifier.runtime.outputs import atomic_dir
from classifier.params.checks import load_sections
from classifier.params.model import ModelParams
from classifier.params.online_augment import OnlineAugmentParams
from classifier.params.train import TrainParams
from classifier.training.loop import FitData, Hooks, epoch_batches, fit, load_training_inputs

PARAMS = (ModelParams, TrainParams, OnlineAugmentParams)  # what training reads, online augmentation too
OUT = paths.LR_FIND_PLOTS
MIN_STEPS, MAX_STEPS = 20, 10_000  # a range test is a few hundred steps; 10,000 is already many epochs


def plot_range_test(table: pd.DataFrame, suggestion: float, path) -> None:
    from classifier.evaluation.plotting import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(table["lr"], table["loss"], color="tab:blue", alpha=0.3, label="loss per step")
    ax.plot(table["lr"], table["smoothed_loss"], color="tab:blue", label="smoothed")
    ax.axvline(suggestion, color="tab:green", linestyle="--", label=f"suggested train.lr {suggestion:.3g}")
    ax.set_xscale("log")
    top = table["smoothed_loss"].iloc[0] * 1.5  # the diverging tail would squash the useful part
    ax.set_ylim(max(0.0, table["smoothed_loss"].min() * 0.8 - 0.05), top)
    ax.set(title="learning-rate range test", xlabel="learning rate (log scale)", ylabel="cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass(frozen=True)
class RangeTest:
    """A learning-rate range test: the learning rate and loss of every step, the loss smoothed."""
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]

    @property
    def suggestion(self) -> float:
        """A third of the learning rate where the smoothed loss was lowest. At the lowest point itself
        a run sits at the edge of diverging; the usual tenth is too timid for a schedule that decays
        from train.lr (cosine, the default): on digits it cost the MLP a point of test accuracy."""
        return self.lrs[int(np.argmin(self.smoothed))] / 3

    def check(self, start: float, end: float) -> None:
        """Raise unless the loss fell somewhere in the range: with no fall, the suggestion means nothing."""
        if len(self.lrs) < 10:
            raise PipelineError(f"the loss diverged within {len(self.lrs)} steps from --start {start:g}: lower --start")
        first, lowest = self.smoothed[0], min(self.smoothed)
        if lowest < 0.95 * first and int(np.argmin(self.smoothed)) >= 5:
            return
        if self.smoothed[-1] > 2 * first or not math.isfinite(self.losses[-1]):
            raise PipelineError(f"the loss never decreased: it rose from {first:.3g} at --start {start:g} (the whole "
                                f"range diverges): lower --start")
        raise PipelineError(f"the loss never decreased (from {first:.3g} to at best {lowest:.3g} up to --end {end:g}): "
                            f"the range is too low to learn in; raise --end (or --steps)")


class RangeRule:
    """The range test as training's StepRule: after step k the rate of step k + 1 is start × growth^(k+1);
    the plain loss of each step is recorded (a sync per step: the stop rule needs it) and smoothed; the
    run ends after `steps` steps, or once the smoothed loss passes 4× its lowest (or is not finite):
    past there it only diverges."""

    def __init__(self, start: float, end: float, steps: int, smoothing: float, log) -> None:
        self.start, self.steps, self.smoothing, self.log = start, steps, smoothing, log
        self.growth = (end / start) ** (1 / max(steps - 1, 1))
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.average = 0.0

    def after(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
        step = len(self.lrs)
        lr = self.start * self.growth ** step
        value = loss.item()
        self.average = self.smoothing * self.average + (1 - self.smoothing) * value
        self.lrs.append(lr)
        self.losses.append(value)
        self.smoothed.append(self.average / (1 - self.smoothing ** (step + 1)))  # bias-corrected from the first
        if (step + 1) % max(1, self.steps // 10) == 0:
            self.log(f"lr_find: step {step + 1}/{self.steps}: lr {lr:.3g}, smoothed loss {self.smoothed[-1]:.4g}")
        if (step + 1 >= self.steps or not math.isfinite(self.smoothed[-1])
                or (step > 10 and self.smoothed[-1] > 4 * min(self.smoothed))):
            return True
        for group in optimizer.param_groups:  # the next step's; train.features_lr_factor: the features' share
            group["lr"] = self.start * self.growth ** (step + 1) * group["lr_factor"]
        return False

    def result(self) -> RangeTest:
        finite = [i for i, v in enumerate(self.smoothed) if math.isfinite(v)]
        return RangeTest([self.lrs[i] for i in finite], [self.losses[i] for i in finite],
                         [self.smoothed[i] for i in finite])


def lr_range_test(model: nn.Module, data: FitData, params: TrainParams, start: float = 1e-6, end: float = 10.0,
                  steps: int = 200, smoothing: float = 0.9, log=lambda _: None) -> RangeTest:
    """Train `model` for up to `steps` batches with the learning rate growing exponentially from
    `start` to `end` (Smith 2017), through training's own loop (classifier/training/loop.py: fit): the
    optimizer (SAM too), L1, label smoothing, the data's class weights, gradient clipping, AMP on CUDA,
    its online augmentation of every batch and the batch order, with RangeRule setting each step's rate and
    ending the run. No schedule, warm-up, moving average or early stopping: the rule alone decides.
    The loss recorded is the plain cross-entropy."""
    rule = RangeRule(start, end, steps, smoothing, log)
    per_epoch = len(epoch_batches(torch.arange(len(data.train)), params.batch_size))
    test_params = dataclasses.replace(params, lr=start, epochs=math.ceil(steps / per_epoch), scheduler="none",
                                      warmup_epochs=0, ema_decay=0.0, patience=0, finetune_epochs=0)
    fit(model, dataclasses.replace(data, val=None), test_params, Hooks(log=lambda _: None, rule=rule))
    return rule.result()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.lr_find", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200,
                        help=f"steps at most, {MIN_STEPS} to {MAX_STEPS} (default: %(default)s)")
    parser.add_argument("--start", type=float, default=1e-6, help="first learning rate (default: %(default)g)")
    parser.add_argument("--end", type=float, default=10.0, help="last learning rate (default: %(default)g)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not (0 < args.start < args.end < math.inf) or not MIN_STEPS <= args.steps <= MAX_STEPS:
        raise PipelineError(f"lr_find needs 0 < --start < --end (finite) and {MIN_STEPS} <= --steps <= {MAX_STEPS}. "
                            f"Got --start {args.start:g}, --end {args.end:g}, --steps {args.steps}")
    params = load_sections(*PARAMS)
    device = claim_device(select_device(params.train.device))
    try:
        classes, preprocessing, train_set, _ = load_training_inputs(params.model)
        _, height, width, channels = train_set.images.shape
        torch.manual_seed(params.train.seed)
        model = build_model(params.model, InputShape(channels, height, width, len(classes))).to(device)
        print(f"lr_find: up to {args.steps} steps of {params.model.name} on {device}, "
              f"lr {args.start:g} to {args.end:g}", flush=True)
        train = DeviceDataset(train_set.images, train_set.labels, device)
        data = FitData(train, None, preprocessing.normalizer(device),
                       class_weights(params.train.class_weights, train_set.labels, len(classes)),
                       online_augment(params.augment, params.train, len(classes)))
        test = lr_range_test(model, data, params.train, args.start, args.end, args.steps,
                             log=lambda line: print(line, flush=True))
    finally:
        release_all()
    test.check(args.start, args.end)
    table = pd.DataFrame({"lr": test.lrs, "loss": test.losses, "smoothed_loss": test.smoothed})
    with atomic_dir(OUT) as out:
        table.to_csv(out / "lr_find.csv", index=False)
        plot_range_test(table, test.suggestion, out / "lr_find.png")
    lowest = test.lrs[int(table["smoothed_loss"].idxmin())]
    print(f"lr_find: {len(table)} steps of {params.model.name} from lr {test.lrs[0]:.3g} to {test.lrs[-1]:.3g}; the "
          f"smoothed loss was lowest at {lowest:.3g} ({OUT}/lr_find.png)")
    print(f"lr_find: suggested train.lr {test.suggestion:.3g} (a third of that); use it:")
    print(f"    dvc exp run -S train.lr={test.suggestion:.3g}")


if __name__ == "__main__":
    run_stage(main)
