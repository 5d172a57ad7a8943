"""Learning-rate range test: which train.lr to try, in one short run instead of dozens.

    python -m stages.lr_find [--steps 200] [--start 1e-6] [--end 10]

Trains the configured model (model and train params) on the augmented train split, with the
learning rate growing exponentially from --start to --end, one step per batch, until the loss
diverges. Writes plots/lr_find/lr_find.csv (lr, loss, smoothed loss per step) and lr_find.png
(loss against the learning rate, log scale, the suggestion marked) and prints the suggested
train.lr with the command to use it. Not a DVC stage: run it after `dvc repro` (it reads
data/augmented), before choosing the learning rate.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from stages.lib import paths
from stages.lib.datasets import atomic_dir
from stages.lib.errors import PipelineError, run_stage
from stages.lib.gpus import release_all
from stages.lib.models import InputShape, build_model
from stages.lib.params import load_params
from stages.lib.training import Batches, claim_device, lr_range_test, select_device
from stages.train import load_inputs

PARAMS = ("model", "train")
OUT = paths.LR_FIND_PLOTS


def plot_range_test(table: pd.DataFrame, suggestion: float, path) -> None:
    from stages.lib.metrics import _pyplot
    plt = _pyplot()
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stages.lr_find", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps at most (default: %(default)s)")
    parser.add_argument("--start", type=float, default=1e-6, help="first learning rate (default: %(default)g)")
    parser.add_argument("--end", type=float, default=10.0, help="last learning rate (default: %(default)g)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not (0 < args.start < args.end) or args.steps < 20:
        raise PipelineError(f"lr_find needs 0 < --start < --end and --steps >= 20. Got --start {args.start:g}, "
                            f"--end {args.end:g}, --steps {args.steps}")
    params = load_params(*PARAMS)
    device = claim_device(select_device(params.train.device))
    try:
        classes, preprocessing, train_set, _ = load_inputs()
        _, height, width, channels = train_set.images.shape
        torch.manual_seed(params.train.seed)
        model = build_model(params.model, InputShape(channels, height, width, len(classes))).to(device)
        test = lr_range_test(model, Batches(train_set.images, train_set.labels, device), preprocessing.normalizer(device),
                             params.train, args.start, args.end, args.steps)
    finally:
        release_all()
    if len(test.lrs) < 10:
        raise PipelineError(f"the loss diverged within {len(test.lrs)} steps from --start {args.start:g}: "
                            f"lower --start")
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
