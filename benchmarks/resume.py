"""Benchmark: what resuming costs a run that is never interrupted. The same fit twice, side by side
in one process: without a kept state, and keeping it after every epoch as train does
(classifier/training/resume.py: the state assembled, torch.save to memory, written atomically with
its JSON beside it); best of --repeats, interleaved. Two models: the default LeNet-5 on the default
data's shape (digits at 32×32: 1,259 train images, batch 64), and EfficientNet-Lite0 (4.7M weights,
SGD with momentum: the state holds the weights three times, with the best epoch's and the momentum).

    python -m benchmarks.resume [--repeats 3] [--epochs 3]

Prints the epoch time with and without the state, the time of the save itself, and its share of an
epoch; results in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from classifier.training.device_dataset import DeviceDataset
from classifier.models.registry import InputShape, build_model
from classifier.params.whole_file import load_params
from classifier.data.preprocessing import Normalizer
from classifier.training.loop import FitData, Hooks, fit_phases
from classifier.training.resume import Identity, StateKeeper

CASES = {  # name: (model.name, images, side, channels, batch size)
    "lenet5 (default), 1,259 digits 32×32": ("lenet5", 1259, 32, 1, 64),
    "efficientnet_lite0 (4.7M weights), 512 images 64×64×3": ("efficientnet_lite0", 512, 64, 3, 32),
}


def one_run(model_name: str, images: np.ndarray, labels: np.ndarray, batch_size: int, epochs: int,
            folder: Path | None) -> tuple[float, float, int]:
    """(seconds of the whole fit, seconds spent saving states, bytes of a state) for one run."""
    params = load_params("model", "train")
    model_params = dataclasses.replace(params.model, name=model_name, pretrained="")
    train = dataclasses.replace(params.train, epochs=epochs, batch_size=batch_size, patience=0, finetune_epochs=0)
    torch.manual_seed(0)
    model = build_model(model_params, InputShape(images.shape[3], images.shape[1], images.shape[2], 10))
    saving = [0.0]
    keep = None
    if folder is not None:
        keeper = StateKeeper(Identity({"model": {"name": model_name}}, "d", "c", "cpu"), epochs, folder=folder)

        def keep(state: dict) -> None:
            started = time.perf_counter()
            keeper.save(state, 1)
            saving[0] += time.perf_counter() - started
    data = DeviceDataset(images, labels, torch.device("cpu"))
    started = time.perf_counter()
    val = DeviceDataset(images[:200], labels[:200], torch.device("cpu"))
    normalize = Normalizer((0.3,) * images.shape[3], (0.3,) * images.shape[3])
    fit_phases(model, FitData(data, val, normalize), train, Hooks(log=lambda _: None, keep=keep))
    total = time.perf_counter() - started
    size = next(folder.glob("*.pt")).stat().st_size if folder is not None else 0
    return total, saving[0], size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.epochs} epochs, best of "
          f"{args.repeats}, interleaved")
    print("| model | epoch without state | epoch keeping it | save alone | save / epoch | state file |")
    print("|---|---|---|---|---|---|")
    for name, (model_name, n, side, channels, batch_size) in CASES.items():
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n, side, side, channels), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        plain, kept, saves, size = float("inf"), float("inf"), float("inf"), 0
        for _ in range(args.repeats):
            plain = min(plain, one_run(model_name, images, labels, batch_size, args.epochs, None)[0])
            with tempfile.TemporaryDirectory() as folder:
                total, saving, size = one_run(model_name, images, labels, batch_size, args.epochs, Path(folder))
            kept, saves = min(kept, total), min(saves, saving)
        epoch, epoch_kept, save = plain / args.epochs, kept / args.epochs, saves / args.epochs
        print(f"| {name} | {epoch:.3f} s | {epoch_kept:.3f} s | {save * 1000:.1f} ms | {save / epoch:.1%} | "
              f"{size / 2**20:.1f} MiB |", flush=True)


if __name__ == "__main__":
    main()
