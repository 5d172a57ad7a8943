"""Stage prepare: decode, convert colour and resize every split into arrays.

    python -m stages.prepare

Writes data/prepared/{train,val,test}/ array sets (images.npy uint8 N×H×W×C, labels.npy,
index.csv) and data/prepared/stats.json: the prepare params (for predict) and the normalisation
that train applies to every batch,
x' = (x / 255 - mean) / std per channel, measured on the train split only: its mean and std
(prepare.normalize: standard) or its min and max - min (minmax: train pixels map onto 0..1).

Resize (prepare.resize): stretch changes the aspect ratio; crop cuts the centre to the target's
aspect ratio first; pad letterboxes, only when asked, with pad_value or a mirrored border.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from stages.lib import paths
from stages.lib.datasets import (allocate_images, atomic_dir, finish_array_set, read_file_list, read_image,
                                 read_json, write_json)
from stages.lib.errors import run_stage
from stages.lib.images import resize, to_grayscale, to_rgb
from stages.lib.params import PrepareParams, load_params

PARAMS = ("prepare",)
DEPS = (paths.SPLIT_DIR, paths.RAW_DIR)
OUTS = (paths.PREPARED_DIR,)


def prepare_image(image: np.ndarray, params: PrepareParams) -> np.ndarray:
    """One decoded H×W×C image -> the model's input layout: grey or RGB, params.size."""
    image = to_grayscale(image) if params.grayscale else to_rgb(image)
    return resize(image, params.size, params.resize, params.interpolation, params.pad_mode, params.pad_value)


def preprocess_params(params: PrepareParams) -> dict:
    """The prepare params as plain values: train stores them in the checkpoint for predict."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}


def channel_stats(images: np.ndarray, chunk: int = 4096) -> dict[str, list[float]]:
    """Per-channel mean, std, min and max of uint8 N×H×W×C in [0, 1], in chunks (the array may
    be memory-mapped and larger than memory)."""
    channels = images.shape[3]
    total, total_sq = np.zeros(channels), np.zeros(channels)
    low, high = np.full(channels, 255), np.zeros(channels, dtype=int)
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start:start + chunk])
        low = np.minimum(low, block.min(axis=(0, 1, 2)))
        high = np.maximum(high, block.max(axis=(0, 1, 2)))
        block = block.astype(np.float64) / 255.0
        total += block.sum(axis=(0, 1, 2))
        total_sq += (block ** 2).sum(axis=(0, 1, 2))
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "min": (low / 255).tolist(), "max": (high / 255).tolist()}


def normalization(stats: dict[str, list[float]], mode: str) -> dict:
    """The (mean, std) pair train applies as (x / 255 - mean) / std; a blank channel divides by 1e-6, not 0."""
    if mode == "minmax":
        mean, std = stats["min"], [hi - lo for lo, hi in zip(stats["min"], stats["max"])]
    else:
        mean, std = stats["mean"], stats["std"]
    return {"mode": mode, "mean": mean, "std": [max(s, 1e-6) for s in std], "train": stats}


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
                stats = normalization(channel_stats(images), params.normalize)
                stats["preprocess"] = preprocess_params(params)
            print(f"prepare: {split} {images.shape[0]} images of {images.shape[1]}×{images.shape[2]}×{images.shape[3]}")
            del images  # release the memory map before the folder is renamed
        write_json(out / paths.STATS_FILE.name, stats)


if __name__ == "__main__":
    run_stage(main)
