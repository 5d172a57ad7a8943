"""Benchmark: our augment writer (OpenCV straight into a reused block buffer, streamed to the .npy
file) against the plain per-image loop (transform each image, append to a list, np.stack,
np.save), on the same input, writing the same file.

    python -m benchmarks.augment [--images 4000] [--size 64] [--repeats 3]

Prints images/s for both, the ratio, and each one's peak heap memory; results in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

from classifier.augment.offline import AugmentPlan, augmentation_variants
from stages.augment import write_augmented

# The seed experiment's setting: 8 blur strengths, each also mirrored: ×18 images.
KERNELS = (3, 5, 7, 9, 11, 13, 15, 17)


def plain_loop(images: np.ndarray, kernels: tuple[int, ...], path: Path) -> np.ndarray:
    """What one writes first: per image, per variant, a list of arrays, stacked, saved."""
    out = []
    for image in images:
        for k in (1, *kernels):
            blurred = image if k == 1 else cv2.blur(image, (k, k)).reshape(image.shape)
            out.append(blurred)
            out.append(cv2.flip(blurred, 1).reshape(image.shape))
    stacked = np.stack(out)
    np.save(path, stacked)
    return stacked


def ours(images: np.ndarray, kernels: tuple[int, ...], path: Path) -> int:
    """The augment stage's writer: blocks of sources augmented into a reused buffer, streamed to disk."""
    plan = AugmentPlan(tuple(augmentation_variants(kernels, True, False)))
    write_augmented(images, np.ones(len(images), dtype=bool), plan, 0, path)
    return len(images) * plan.copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images = np.random.default_rng(0).integers(0, 256, (args.images, args.size, args.size, 1), dtype=np.uint8)
    n_out = args.images * (1 + len(KERNELS)) * 2
    print(f"{args.images} source images of {args.size}×{args.size} -> {n_out} augmented "
          f"({n_out * args.size * args.size / 2**20:.0f} MiB output), best of {args.repeats}")

    times: dict[str, list[float]] = {"ours": [], "plain": []}
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, so both see the same machine state
            for name in ("ours", "plain"):
                gc.collect()
                tracemalloc.start()
                started = time.perf_counter()
                path = Path(tmp) / f"{name}.npy"
                result = ours(images, KERNELS, path) if name == "ours" else plain_loop(images, KERNELS, path)
                times[name].append(time.perf_counter() - started)
                peaks[name] = tracemalloc.get_traced_memory()[1] / 2**20  # heap peak, MiB (numpy is traced)
                tracemalloc.stop()
                del result
        # Both wrote the same array, byte for byte.
        assert np.array_equal(np.load(Path(tmp) / "ours.npy"), np.load(Path(tmp) / "plain.npy"))
    best = {name: min(t) for name, t in times.items()}
    for name in ("ours", "plain"):
        print(f"{name:>6}: {n_out / best[name]:>10,.0f} images/s  ({best[name]:.2f} s)  "
              f"peak heap {peaks[name]:,.0f} MiB")
    print(f" ratio: ours has {best['plain'] / best['ours']:.2f}× the plain loop's throughput "
          f"and {peaks['ours'] / peaks['plain']:.3f}× its peak memory")


if __name__ == "__main__":
    main()
