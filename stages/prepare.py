"""Stage prepare: decode, convert colour and resize every split into arrays.

    python -m stages.prepare

Writes data/prepared/{train,val,test}/ array sets (images.npy uint8 N×H×W×C, labels.npy,
index.csv) and data/prepared/stats.json: per-channel mean and std of the train split in [0, 1],
which train and predict use to normalise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.lib import paths
from stages.lib.datasets import (allocate_images, atomic_dir, finish_array_set, read_file_list, read_image,
                                 read_json, write_json)
from stages.lib.errors import run_stage
from stages.lib.images import resize_stretch, to_grayscale, to_rgb
from stages.lib.params import PrepareParams, load_params

PARAMS = ("prepare",)
DEPS = (paths.SPLIT_DIR, paths.RAW_DIR)
OUTS = (paths.PREPARED_DIR,)


def prepare_image(image: np.ndarray, params: PrepareParams) -> np.ndarray:
    """One decoded H×W×C image -> the model's input layout: grey or RGB, params.size."""
    image = to_grayscale(image) if params.grayscale else to_rgb(image)
    return resize_stretch(image, params.size)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 N×H×W×C in [0, 1], in chunks (the array may be memory-mapped)."""
    channels = images.shape[3]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 1, 2))
        total_sq += (block ** 2).sum(axis=(0, 1, 2))
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return mean.tolist(), np.maximum(std, 1e-6).tolist()  # a blank data set must not divide by zero


def prepare_split(split: str, out: Path, classes: list[str], params: PrepareParams) -> np.ndarray:
    files = read_file_list(paths.SPLIT_DIR / f"{split}.csv")
    class_id = {name: i for i, name in enumerate(classes)}
    channels = 1 if params.grayscale else 3
    folder = out / split
    folder.mkdir()
    images = allocate_images(folder, (len(files), *params.size, channels))
    for row, path in enumerate(files["path"]):
        images[row] = prepare_image(read_image(Path(path)), params)
    labels = np.array([class_id[label] for label in files["label"]], dtype=np.int64)
    index = pd.DataFrame({"source": files["path"], "split": split, "augmentation": "original"})
    images.flush()
    finish_array_set(folder, labels, index)
    return images


def main() -> None:
    params = load_params(*PARAMS).prepare
    classes = read_json(paths.CLASSES_FILE)
    with atomic_dir(paths.PREPARED_DIR) as out:
        for split in paths.SPLITS:
            images = prepare_split(split, out, classes, params)
            if split == "train":
                mean, std = channel_stats(images)
            print(f"prepare: {split} {images.shape[0]} images of {images.shape[1]}×{images.shape[2]}×{images.shape[3]}")
            del images  # release the memory map before the folder is renamed
        write_json(out / paths.STATS_FILE.name, {"mean": mean, "std": std})


if __name__ == "__main__":
    run_stage(main)
