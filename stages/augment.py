"""Stage augment: the train split, plus blurred and flipped copies. Val and test are never read.

    python -m stages.augment

Writes data/augmented/train/ (images.npy, labels.npy, index.csv): each prepared train image
followed by its variants (each blur kernel, each flip of the original and of every blur),
N × (1 + len(augment.blur_kernels)) × (1 + hflip + vflip) rows, streamed to disk in blocks.
index.csv names each row's source file and augmentation, which is how the tests prove that no val
or test image leaks into training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.lib import paths
from stages.lib.datasets import atomic_dir, finish_array_set, load_array_set
from stages.lib.errors import run_stage
from stages.lib.images import Variant, augment_into, augmentation_variants
from stages.lib.params import load_params

PARAMS = ("augment",)
DEPS = (paths.PREPARED_DIR,)
OUTS = (paths.AUGMENTED_DIR,)


def write_augmented_images(images: np.ndarray, variants: list[Variant], path: Path, chunk: int = 256) -> int:
    """Write `augment_into`'s output for all of `images` as the .npy file `path`, streamed.

    A block of `chunk` sources is augmented into one reused buffer and appended to the file with
    a sequential write: memory stays at chunk·V images whatever the output's size, and no page of
    a memory map is faulted in (measured: writing through a fresh memmap halves the throughput).
    Returns the number of rows written.
    """
    n_variants = len(variants)
    shape = (len(images) * n_variants, *images.shape[1:])
    buffer = np.empty((min(chunk, max(len(images), 1)) * n_variants, *images.shape[1:]), dtype=np.uint8)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for start in range(0, len(images), chunk):
            block = np.asarray(images[start:start + chunk])
            rows = buffer[:len(block) * n_variants]
            augment_into(block, variants, rows)
            f.write(rows.data)
    return shape[0]


def main() -> None:
    params = load_params(*PARAMS).augment
    source = load_array_set(paths.PREPARED_DIR / "train")
    variants = augmentation_variants(params.blur_kernels, params.hflip, params.vflip)
    n = len(source.labels)
    with atomic_dir(paths.AUGMENTED_DIR) as out:
        folder = out / "train"
        folder.mkdir()
        write_augmented_images(source.images, variants, folder / "images.npy")
        # Rows are image-major: source i's variants are rows i·V .. i·V + V - 1.
        index = source.index.loc[source.index.index.repeat(len(variants))].reset_index(drop=True)
        index["augmentation"] = [variant.name for variant in variants] * n
        labels = np.repeat(source.labels, len(variants))
        finish_array_set(folder, labels, index)
    names = ", ".join(variant.name for variant in variants)
    print(f"augment: {n} train images × {len(variants)} variants ({names}) = {n * len(variants)}")


if __name__ == "__main__":
    run_stage(main)
