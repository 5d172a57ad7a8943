"""The files that flow between stages: JSON, file lists, array sets.

Array set: a folder with one `.npy` per field, so DVC hashes a few big files and readers can
memory-map them:
    images.npy  uint8 N×H×W×C
    labels.npy  int64 N        (index into classes.json)
    index.csv   N rows: source (the raw image file), split, augmentation
Written by prepare and augment; read by augment, train, evaluate and lr_find.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classifier.runtime.outputs import atomic_file


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def class_ids(classes: list[str]) -> dict[str, int]:
    """Class name -> its id: its index in data/split/classes.json."""
    return {name: i for i, name in enumerate(classes)}


def write_file_list(path: Path, files: list[str], labels: list[str]) -> None:
    with atomic_file(path) as tmp:
        pd.DataFrame({"path": files, "label": labels}).to_csv(tmp, index=False)


def read_file_list(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


# -------------------------------------------------------------------------------- array sets
@dataclass(frozen=True)
class ArraySet:
    images: np.ndarray       # uint8 N×H×W×C (memory-mapped when loaded)
    labels: np.ndarray       # int64 N
    index: pd.DataFrame      # source, split, augmentation


def allocate_images(folder: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A writable uint8 array backed by `folder/images.npy`: filled in place, never held twice in memory.

    The file's blocks are reserved up front: a memory map that runs out of disk would kill the
    process with SIGBUS; here a full disk is an OSError (ENOSPC) before anything is written."""
    path = Path(folder) / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return images


def finish_array_set(folder: Path, labels: np.ndarray, index: pd.DataFrame) -> None:
    """Complete an array set whose images.npy is written (`allocate_images`)."""
    np.save(Path(folder) / "labels.npy", labels.astype(np.int64))
    index.to_csv(Path(folder) / "index.csv", index=False)


def load_array_set(folder: Path, mmap: bool = True) -> ArraySet:
    folder = Path(folder)
    images = np.load(folder / "images.npy", mmap_mode="r" if mmap else None)
    labels = np.load(folder / "labels.npy")
    index = pd.read_csv(folder / "index.csv", dtype=str, keep_default_na=False)
    return ArraySet(images, labels, index)
