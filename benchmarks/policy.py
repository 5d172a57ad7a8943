"""Benchmark: augment.online_policy's batched ops (classifier/augment/policies.py: each op once a batch, on the
images that drew it) against the plain way, torchvision's TrivialAugmentWide / RandAugment called
on each image of the batch in a Python loop. Both give the same bytes for the same draws
(tests/test_augment_online.py); this measures the time.

    python -m benchmarks.policy [--batch 256] [--size 64] [--repeats 5] [--device cpu]

Prints milliseconds per batch for both and the ratio; results in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from classifier.augment.policies import apply_policy


def per_image(images: torch.Tensor, policy: str) -> torch.Tensor:
    """The plain way: the torchvision transform on each image in turn (its draws from torch's generator)."""
    from torchvision.transforms import v2
    transform = v2.TrivialAugmentWide() if policy == "trivialaugment" else v2.RandAugment()
    return torch.stack([transform(image) for image in images])


def milliseconds(run, repeats: int, device: torch.device) -> float:
    run()  # warm-up: first calls build kernels and caches
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (colour images)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (args.batch, 3, args.size, args.size),
                                                                 dtype=np.uint8)).to(device)
    print(f"{args.batch} colour images of {args.size}×{args.size} on {device}, {args.repeats} batches each")
    for policy in ("trivialaugment", "randaugment"):
        rng = np.random.default_rng(0)
        batched = milliseconds(lambda: apply_policy(images, policy, rng), args.repeats, device)
        plain = milliseconds(lambda: per_image(images, policy), args.repeats, device)
        print(f"{policy:15} batched {batched:7.1f} ms   per image {plain:7.1f} ms   ratio {plain / batched:5.1f}×")


if __name__ == "__main__":
    main()
