"""Reading image folders and array sets, splitting them, and writing outputs atomically.

Array set: a folder with one `.npy` per field, so DVC hashes a few big files and readers can
memory-map them:
    images.npy  uint8 N×H×W×C
    labels.npy  int64 N        (index into classes.json)
    index.csv   N rows: source (the raw image file), split, augmentation
Every writer builds its output in a temporary sibling and renames it into place, so a failed
stage leaves either the old output or none, never half of one; the temporary siblings a killed
stage left behind are removed when the output is next written. Outputs respect the umask, and a
full disk is one PipelineError naming the output.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import pandas as pd

from .errors import PipelineError
from .paths import SUMMARY_METRICS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")  # what OpenCV decodes here
FORMATS = "PNG/JPEG/BMP/WebP/TIFF"

# Data stages must write the same bytes on every CPU, or a fresh clone's `dvc status` never matches
# the committed dvc.lock. OpenCV picks code by CPU at run time: Intel IPP's AVX-512 bicubic resize
# and the AVX2 warpAffine round differently from its portable code (6 of the digits' pixels,
# measured). Portable code only, for every stage and tool that imports this module.
cv2.setUseOptimized(False)


# ------------------------------------------------------------------------------ atomic writes
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(target: Path) -> None:
    """Delete `.<name>.*.tmp` siblings of `target` that a killed run (kill -9, power loss) left."""
    for stale in Path(target).parent.glob(f".{Path(target).name}.*.tmp"):
        _remove(stale)


# errno -> why a write failed and what to do, in words a user can act on
_FREE, _WRITABLE = "free some space and rerun", "make it writable and rerun"
_WRITE_ERRORS = {errno.ENOSPC: ("disk full", _FREE), errno.EDQUOT: ("disk quota exceeded", _FREE),
                 errno.EACCES: ("permission denied", _WRITABLE), errno.EPERM: ("permission denied", _WRITABLE),
                 errno.EROFS: ("read-only file system", _WRITABLE)}


@contextlib.contextmanager
def _write_errors_are_one_line(target: Path, others: int = 0) -> Iterator[None]:
    """A full disk, a read-only folder or a missing permission while writing `target` (and `others`
    outputs besides): one PipelineError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        what = shown(target) + (f" and {others} other output(s)" if others else "")
        where = f" ({shown(exc.filename)})" if exc.filename and exc.errno not in (errno.ENOSPC, errno.EDQUOT) else ""
        problem, remedy = _WRITE_ERRORS[exc.errno]
        earlier = f"the earlier {shown(target)}, if any, is unchanged" if not others else "no output was changed"
        raise PipelineError(f"{problem} while writing {what}{where}: {remedy} ({earlier})") from None


def _temporary_sibling(target: Path, is_dir: bool) -> Path:
    """An empty temporary folder or file `.<name>.<random>.tmp` beside `target`, with the umask's mode."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600)
    return tmp


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def staged_outputs(files: tuple[Path, ...] = (), dirs: tuple[Path, ...] = ()) -> Iterator[dict[Path, Path]]:
    """All of a stage's outputs switch together, or none does.

    Yields {target: temporary sibling} (an empty folder for each of `dirs`, a path for each of
    `files`): write there. On success every target is replaced by its temporary, one rename each,
    after everything was written; on any error (a full disk, Ctrl-C, a bug) every target keeps its
    old content and the temporaries are removed. Every temporary is made before the body runs, so a
    read-only folder fails before any work is done."""
    targets = [(Path(t), False) for t in files] + [(Path(t), True) for t in dirs]
    staged: dict[Path, Path] = {}
    try:
        for target, is_dir in targets:
            with _write_errors_are_one_line(target):
                staged[target] = _temporary_sibling(target, is_dir)
        with _write_errors_are_one_line(targets[0][0], len(targets) - 1):
            yield staged
            # Written: switch each target (old folders are renamed aside first, then removed).
            for target, tmp in staged.items():
                if target.is_dir() and not target.is_symlink():
                    aside = target.with_name(f".{target.name}.{os.getpid()}.old.tmp")
                    os.replace(target, aside)
                    os.replace(tmp, target)
                    shutil.rmtree(aside)
                else:
                    os.replace(tmp, target)
    finally:
        for tmp in staged.values():
            if tmp.exists():
                _remove(tmp)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target`."""
    with staged_outputs(dirs=(Path(target),)) as staged:
        yield staged[Path(target)]


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed to `target`."""
    with staged_outputs(files=(Path(target),)) as staged:
        yield staged[Path(target)]


@contextlib.contextmanager
def live_outputs() -> Iterator[Callable[[Path], contextlib.AbstractContextManager[Path]]]:
    """Outputs a stage rewrites while it runs: progress that `dvc exp show` and `dvc plots diff`
    read from a running experiment's workspace. Yields `rewrite(target)`, a context giving a
    temporary path that replaces `target` atomically on exit (a reader never sees half a file).

    If the stage then fails, each target is put back as it was before the stage started (or
    removed), so a failed run leaves no progress of its own beside the last run's outputs. The
    earlier file waits as `.<name>~before.<pid>.tmp` meanwhile."""
    saved: dict[Path, Path | None] = {}

    @contextlib.contextmanager
    def rewrite(target: Path) -> Iterator[Path]:
        target = Path(target)
        if target not in saved:
            aside = target.with_name(f".{target.name}~before.{os.getpid()}.tmp")
            with _write_errors_are_one_line(target):
                if target.exists():
                    os.replace(target, aside)
            saved[target] = aside if aside.exists() else None
        with atomic_file(target) as tmp:
            yield tmp

    try:
        yield rewrite
    except BaseException:
        for target, aside in saved.items():
            _remove(target)
            if aside is not None:
                os.replace(aside, target)
        raise
    for aside in saved.values():
        if aside is not None:
            _remove(aside)


def retire_summary() -> None:
    """This run changes what evaluate scored: remove metrics/summary.json until evaluate writes this
    run's, so that no table (`dvc exp show`, stages.report) shows a running experiment its baseline's
    scores. DVC runs evaluate next whenever it finds the file missing."""
    _remove(SUMMARY_METRICS)


def write_json(path: Path, obj: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


# ------------------------------------------------------------------------------------ images
def shown(path: Path | str) -> str:
    """A path as text that prints and encodes: bytes of a name that are not UTF-8 become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence what libjpeg and libpng print on stderr (without naming the file): our error names it."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded PNG/JPEG/BMP/WebP/TIFF bytes -> uint8 H×W×C, C = 1 (grey) or 3 (RGB), turned upright as the
    JPEG's EXIF orientation says. 16-bit images keep their top 8 bits; an alpha channel is dropped.
    A truncated, corrupt or over-large image raises PipelineError starting with `name`."""
    if not data:
        raise PipelineError(f"{name}: empty (zero-byte) image file")
    # libjpeg fills a cut-off JPEG with grey and says so only on stderr: the end-of-image marker
    # must follow the last scan (an EXIF thumbnail's own marker comes before it).
    if data[:2] == b"\xff\xd8" and data.find(b"\xff\xd9", data.rfind(b"\xff\xda")) < 0:
        raise PipelineError(f"{name}: truncated JPEG (no end-of-image marker after the image data)")
    try:
        with _quiet_stderr():
            # ANYCOLOR|ANYDEPTH, not UNCHANGED: UNCHANGED would ignore the EXIF orientation.
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise PipelineError(f"{name}: more than 2^30 pixels, OpenCV's limit: shrink it first") from None
        raise PipelineError(f"{name}: not a readable image (corrupt or not {FORMATS})") from None
    if image is None:
        raise PipelineError(f"{name}: not a readable image (corrupt or not {FORMATS})")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise PipelineError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return image[:, :, None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: Path) -> np.ndarray:
    """The one image reader (ingest, prepare, predict): the file's bytes, decoded by decode_image.
    Reading bytes first keeps OpenCV away from file names that are not valid UTF-8."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PipelineError(f"{shown(path)}: cannot be read ({exc.strerror})") from None
    return decode_image(data, shown(path))


def pixel_hash(image: np.ndarray) -> str:
    """Identifies the decoded pixels (and shape): equal for the same picture in two files or formats."""
    return hashlib.sha1(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A 16×16 grey float32 vector of the picture: close for a resized copy or a re-encoded JPEG
    (about 0.2 grey levels apart), far for different pictures (different digits: 9 or more)."""
    grey = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)


def near_duplicates(thumbs: np.ndarray, max_rms: float = 2.0, chunk: int = 1024) -> list[tuple[int, int]]:
    """(first, later) index pairs of thumbnails within `max_rms` grey levels (root mean square):
    each image paired with the first one before it that it nearly equals."""
    thumbs = np.asarray(thumbs, dtype=np.float32).reshape(len(thumbs), -1)
    squares = (thumbs.astype(np.float64) ** 2).sum(1)
    limit = max_rms ** 2 * thumbs.shape[1]
    pairs = []
    for start in range(0, len(thumbs), chunk):
        block = thumbs[start:start + chunk]
        distances = squares[start:start + chunk, None] + squares[None, :] - 2.0 * (block @ thumbs.T)
        for row, later in enumerate(range(start, start + len(block))):
            hits = np.flatnonzero(distances[row, :later] <= limit)
            if hits.size:
                pairs.append((int(hits[0]), later))
    return pairs


def write_png(path: Path, image: np.ndarray) -> None:
    """Write uint8 H×W×C (C = 1 or 3, RGB) as PNG; a full disk raises OSError (ENOSPC)."""
    if image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise PipelineError(f"{shown(path)}: could not encode image")
    Path(path).write_bytes(encoded.tobytes())


@dataclass(frozen=True)
class FolderListing:
    files: list[tuple[Path, str]]  # (image file, class name), sorted by class then name
    skipped: list[Path]            # everything else: hidden, non-image, symlinked, not a regular file


def _is_plain(entry: os.DirEntry) -> bool:
    return entry.is_file(follow_symlinks=False) and stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode)


def _walk(folder: Path, images: list[Path], skipped: list[Path]) -> None:
    """Regular image files under `folder`, without following symlinks; the rest goes to `skipped`."""
    for entry in os.scandir(folder):
        path = Path(entry.path)
        if entry.name.startswith(".") or entry.is_symlink():
            skipped.append(path)
        elif entry.is_dir(follow_symlinks=False):
            _walk(path, images, skipped)
        elif _is_plain(entry) and path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            skipped.append(path)


def list_class_folder(root: Path) -> FolderListing:
    """List `root/<class>/<image>`; classes are the subfolder names, sorted.

    Skipped, and counted: hidden entries, files that are not PNG/JPEG/BMP/WebP/TIFF, loose files beside the
    class folders, symlinks (a link back into the source would list images twice under another
    label; one pointing outside is not part of the folder) and what is not a regular file (FIFOs,
    sockets). Raises PipelineError when the folder is missing, has fewer than two classes, or a
    class folder holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise PipelineError(f"data folder {shown(root)} not found (data.source in params.yaml)")
    files: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    class_dirs = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            class_dirs.append(Path(entry.path))
        else:
            skipped.append(Path(entry.path))
    for class_dir in class_dirs:
        images: list[Path] = []
        _walk(class_dir, images, skipped)
        if not images:
            raise PipelineError(f"class folder {shown(class_dir)} holds no image ({FORMATS})")
        files.extend((path, shown(class_dir.name)) for path in sorted(images))
    if len(class_dirs) < 2:
        raise PipelineError(f"data folder {shown(root)} must hold at least two class subfolders, "
                            f"found {len(class_dirs)}")
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
    """A writable uint8 array backed by `folder/images.npy`: filled in place, never held twice in memory.

    The file's blocks are reserved up front: a memory map that runs out of disk would kill the
    process with SIGBUS; here a full disk is an OSError (ENOSPC) before anything is written."""
    path = Path(folder) / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return images


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
