"""Benchmark: our train loop (classifier.training.loop.fit: uint8 data resident on the device, index
batches, on-device normalisation, per-step loss kept on the device) against a minimal plain
PyTorch loop (pre-normalised float tensors, DataLoader over a TensorDataset, shuffle=True), for
the same model, data, batch size and epochs, on the CPU and, when there is one, on CUDA.

    python -m benchmarks.train [--images 10000] [--model lenet5] [--size 32] [--epochs 2] [--repeats 3]

Prints training images/s for both and the ratio; results in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.harness import plain_epoch
from classifier.training.device_dataset import DeviceDataset
from classifier.models.registry import InputShape, build_model
from classifier.params.whole_file import load_params
from classifier.data.preprocessing import Normalizer
from classifier.training.loop import FitData, Hooks, fit

MEAN, STD = (0.3,), (0.3,)
LR = 0.01


@dataclass(frozen=True)
class Workload:
    """What both sides train on: uint8 N×H×W×C images with their labels, a val set scored after each
    epoch, and the batch size and epochs."""
    images: np.ndarray
    labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    batch_size: int
    epochs: int


def plain_loop(model: nn.Module, work: Workload, device: torch.device) -> None:
    """What the PyTorch tutorials write: float tensors, a DataLoader, the textbook loop."""
    def as_float(a: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255 - MEAN[0]) / STD[0]).to(device)

    x, y = as_float(work.images), torch.from_numpy(work.labels).to(device)
    val_x, val_y = as_float(work.val_images), torch.from_numpy(work.val_labels).to(device)
    loader = DataLoader(TensorDataset(x, y), batch_size=work.batch_size, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    for _ in range(work.epochs):
        plain_epoch(model, loader, optimizer)
        model.eval()
        with torch.no_grad():
            nn.functional.cross_entropy(model(val_x), val_y).item()


def ours(model: nn.Module, work: Workload, device: torch.device) -> None:
    params = dataclasses.replace(load_params("train").train, epochs=work.epochs, batch_size=work.batch_size, lr=LR,
                                 scheduler="none", patience=0, optimizer="sgd", momentum=0.9, weight_decay=5e-4)
    fit(model, FitData(DeviceDataset(work.images, work.labels, device),
                       DeviceDataset(work.val_images, work.val_labels, device), Normalizer(MEAN, STD, device)),
        params, Hooks(log=lambda _: None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, args.channels), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images)
    work = Workload(images, labels, images[:500], labels[:500], args.batch_size, args.epochs)
    shape = InputShape(args.channels, args.size, args.size, 10)
    model_params = dataclasses.replace(load_params("model").model, name=args.model)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"{args.model} on {args.images} images of {args.channels}×{args.size}×{args.size}, batch "
          f"{args.batch_size}, {args.epochs} epochs (+ a 500-image val pass each), best of {args.repeats}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for device in devices:
        best = {"ours": float("inf"), "plain": float("inf")}
        for _ in range(args.repeats):  # interleaved, so both see the same machine state
            for name, run in (("ours", ours), ("plain", plain_loop)):
                torch.manual_seed(0)
                model = build_model(model_params, shape).to(device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                run(model, work, device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - started)
        seen = args.images * args.epochs
        for name in ("ours", "plain"):
            print(f"{device.type:>4} {name:>6}: {seen / best[name]:>10,.0f} train images/s  ({best[name]:.2f} s)")
        print(f"{device.type:>4}  ratio: ours has {best['plain'] / best['ours']:.2f}× the plain loop's throughput")


if __name__ == "__main__":
    main()
