"""Listing a folder of class subfolders: which files are images, which are skipped and why.
Used by ingest (the source folder) and split (data/raw).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from classifier.runtime.errors import PipelineError, printable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")  # decode.FORMATS: what OpenCV decodes
FORMATS = "PNG/JPEG/BMP/WebP/TIFF/GIF"


@dataclass(frozen=True)
class FolderListing:
    files: list[tuple[str, str]]   # (image file's path, class name), sorted by class then name
    skipped: list[Path]            # everything else: hidden, non-image, symlinked, not a regular file
    sizes: list[int]               # each file's size in bytes (from the listing's own stat: no second one)


def _is_plain(entry: os.DirEntry) -> bool:
    return entry.is_file(follow_symlinks=False) and stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode)


def _walk(folder: str, images: list[tuple[str, int]], skipped: list[Path]) -> None:
    """Regular image files under `folder` (path, size), without following symlinks; the rest goes to
    `skipped`. Strings, not Paths: at 100,000 files pathlib's objects cost seconds."""
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or entry.is_symlink():
            skipped.append(Path(entry.path))
        elif entry.is_dir(follow_symlinks=False):
            _walk(entry.path, images, skipped)
        elif _is_plain(entry) and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
            images.append((entry.path, entry.stat(follow_symlinks=False).st_size))
        else:
            skipped.append(Path(entry.path))


def list_class_folder(root: Path) -> FolderListing:
    """List `root/<class>/<image>`; classes are the subfolder names, sorted.

    Skipped, and counted: hidden entries, files that are not PNG/JPEG/BMP/WebP/TIFF/GIF, loose files beside the
    class folders, symlinks (a link back into the source would list images twice under another
    label; one pointing outside is not part of the folder) and what is not a regular file (FIFOs,
    sockets). Raises PipelineError when the folder is missing, has fewer than two classes, or a
    class folder holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise PipelineError(f"data folder {printable(root)} not found (data.source in params.yaml)")
    files: list[tuple[Path, str]] = []
    sizes: list[int] = []
    skipped: list[Path] = []
    class_dirs = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            class_dirs.append(Path(entry.path))
        else:
            skipped.append(Path(entry.path))
    for class_dir in class_dirs:
        images: list[tuple[str, int]] = []
        _walk(str(class_dir), images, skipped)
        if not images:
            raise PipelineError(f"class folder {printable(class_dir)} holds no image ({FORMATS})")
        label = printable(class_dir.name)
        for path, size in sorted(images, key=lambda image: image[0].split(os.sep)):  # as Paths sort
            files.append((path, label))  # text: 200,000 Paths cost seconds
            sizes.append(size)
    if len(class_dirs) < 2:
        raise PipelineError(f"data folder {printable(root)} must hold at least two class subfolders, "
                            f"found {len(class_dirs)}")
    return FolderListing(files, skipped, sizes)
