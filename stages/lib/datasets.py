"""Reading image folders and array sets, splitting them, and writing outputs atomically.

Array set: a folder with one `.npy` per field, so DVC hashes a few big files and readers can
memory-map them:
    images.npy  uint8 N×H×W×C
    labels.npy  int64 N        (index into classes.json)
    index.csv   N rows: source (the raw image file), split, augmentation
Every writer builds its output in a temporary sibling and renames it into place, so a failed
stage leaves either the old output or none, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pandas as pd

from .errors import PipelineError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


# ------------------------------------------------------------------------------ atomic writes
@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed to `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


# ------------------------------------------------------------------------------------ images
def read_image(path: Path) -> np.ndarray:
    """Read any PNG/JPEG/BMP as uint8 H×W×C, C = 1 (grey) or 3 (RGB, converted from OpenCV's BGR).

    16-bit images keep their top 8 bits; an alpha channel is dropped. Raises PipelineError
    naming the file when it is empty or cannot be decoded.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise PipelineError(f"{path}: empty (zero-byte) image file")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise PipelineError(f"{path}: not a readable image (corrupt or not PNG/JPEG/BMP)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise PipelineError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image[:, :, :1]


def write_png(path: Path, image: np.ndarray) -> None:
    """Write uint8 H×W×C (C = 1 or 3, RGB) as PNG."""
    if image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise PipelineError(f"{path}: could not write image")


@dataclass(frozen=True)
class FolderListing:
    files: list[tuple[Path, str]]  # (image file, class name), sorted by class then name
    skipped: list[Path]            # hidden and non-image files that were passed over


def list_class_folder(root: Path) -> FolderListing:
    """List `root/<class>/<image>`; classes are the subfolder names, sorted.

    Raises PipelineError when the folder is missing, has fewer than two classes, or a class
    folder holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise PipelineError(f"data folder {root} not found (data.source in params.yaml)")
    files: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for class_dir in class_dirs:
        images = []
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file():
                continue
            hidden = any(part.startswith(".") for part in path.relative_to(class_dir).parts)
            if hidden or path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(path)
            else:
                images.append((path, class_dir.name))
        if not images:
            raise PipelineError(f"class folder {class_dir} holds no PNG, JPEG or BMP image")
        files.extend(images)
    if len(class_dirs) < 2:
        raise PipelineError(f"data folder {root} must hold at least two class subfolders, found {len(class_dirs)}")
    return FolderListing(files, skipped)


# ------------------------------------------------------------------------------------- split
def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int,
                     class_names: list[str], min_per_split: int = 1) -> dict[str, np.ndarray]:
    """Split row indices class by class: each class is shuffled with `seed` and cut by `fractions`
    (e.g. {"train": .7, "val": .15, "test": .15}, the first split taking the rounding rest).

    Every split gets at least `min_per_split` images of every class; a class too small for that
    raises, naming it. Returns split -> sorted row indices; the splits are disjoint and cover every row.
    """
    rng = np.random.default_rng(seed)
    names = list(fractions)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        counts = {name: max(min_per_split, round(len(rows) * fractions[name])) for name in names[1:]}
        counts[names[0]] = len(rows) - sum(counts.values())
        if counts[names[0]] < min_per_split:
            raise PipelineError(
                f"class '{class_names[label]}' has {len(rows)} image(s); the split needs at least "
                f"{min_per_split * len(names)}: {min_per_split} (split.min_per_split) for each of "
                f"{', '.join(names)}. Add images, or merge or drop the class (split.merge, split.drop)")
        start = 0
        for name in names:
            parts[name].append(rows[start:start + counts[name]])
            start += counts[name]
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def merge_and_drop(labels: list[str], merge: dict[str, str], drop: tuple[str, ...]) -> list[str | None]:
    """Rename classes by `merge` ({old: new}), then drop the classes in `drop` (names after the
    merge): returns the new label of each row, None for a dropped row. Unknown names raise."""
    present = sorted(set(labels))
    unknown = sorted(set(merge) - set(present))
    if unknown:
        raise PipelineError(f"The 'split.merge' parameter names unknown class(es) {', '.join(unknown)}; "
                            f"classes: {', '.join(present)}")
    renamed = [merge.get(label, label) for label in labels]
    after_merge = sorted(set(renamed))
    unknown = sorted(set(drop) - set(after_merge))
    if unknown:
        raise PipelineError(f"The 'split.drop' parameter names unknown class(es) {', '.join(unknown)}; "
                            f"classes after split.merge: {', '.join(after_merge)}")
    kept = [None if label in drop else label for label in renamed]
    if len({label for label in kept if label is not None}) < 2:
        raise PipelineError("fewer than two classes are left after split.merge and split.drop")
    return kept


def downsample(labels: np.ndarray, max_per_class: int, balance: bool, rng: np.random.Generator) -> np.ndarray:
    """Row indices kept when each class is cut, at random, to `max_per_class` (0: no cap) and,
    with `balance`, to the smallest class's count. Sorted; every class keeps at least one row."""
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.min() if balance else counts.max()
    if max_per_class:
        target = min(target, max_per_class)
    kept = [rng.permutation(np.flatnonzero(labels == c))[:target] for c in classes]
    return np.sort(np.concatenate(kept))


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
    """A writable uint8 array backed by `folder/images.npy`: filled in place, never held twice in memory."""
    return np.lib.format.open_memmap(Path(folder) / "images.npy", mode="w+", dtype=np.uint8, shape=shape)


def finish_array_set(folder: Path, labels: np.ndarray, index: pd.DataFrame) -> None:
    """Complete an array set whose images.npy is written (`allocate_images`, `write_augmented_images`)."""
    np.save(Path(folder) / "labels.npy", labels.astype(np.int64))
    index.to_csv(Path(folder) / "index.csv", index=False)


def load_array_set(folder: Path, mmap: bool = True) -> ArraySet:
    folder = Path(folder)
    images = np.load(folder / "images.npy", mmap_mode="r" if mmap else None)
    labels = np.load(folder / "labels.npy")
    index = pd.read_csv(folder / "index.csv", dtype=str, keep_default_na=False)
    return ArraySet(images, labels, index)
