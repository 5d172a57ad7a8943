"""Stage augment: the train split, plus blurred and flipped copies. Val and test are never read.

    python -m stages.augment

Writes data/augmented/train/ (images.npy, labels.npy, index.csv): the prepared train images
first, then one block per variant (each blur kernel, each flip of the original and of every blur),
N × (1 + len(augment.blur_kernels)) × (1 + hflip + vflip) rows. index.csv names each row's source
file and augmentation, which is how the tests prove no val or test image leaks into training.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from stages.lib import paths
from stages.lib.datasets import allocate_images, atomic_dir, finish_array_set, load_array_set
from stages.lib.errors import run_stage
from stages.lib.images import augmentation_variants
from stages.lib.params import load_params

PARAMS = ("augment",)
DEPS = (paths.PREPARED_DIR,)
OUTS = (paths.AUGMENTED_DIR,)
CHUNK = 2048  # source images transformed at a time: bounds memory whatever the data set's size


def main() -> None:
    params = load_params(*PARAMS).augment
    source = load_array_set(paths.PREPARED_DIR / "train")
    variants = augmentation_variants(params.blur_kernels, params.hflip, params.vflip)
    n = len(source.labels)
    with atomic_dir(paths.AUGMENTED_DIR) as out:
        folder = out / "train"
        folder.mkdir()
        images = allocate_images(folder, (n * len(variants), *source.images.shape[1:]))
        for start in range(0, n, CHUNK):
            chunk = source.images[start:start + CHUNK]
            for v, variant in enumerate(variants):
                images[v * n + start:v * n + start + len(chunk)] = variant.apply(chunk)
        index = pd.concat([source.index.assign(augmentation=variant.name) for variant in variants], ignore_index=True)
        labels = np.tile(source.labels, len(variants))
        finish_array_set(folder, images, labels, index)
        del images
    names = ", ".join(variant.name for variant in variants)
    print(f"augment: {n} train images × {len(variants)} variants ({names}) = {n * len(variants)}")


if __name__ == "__main__":
    run_stage(main)
