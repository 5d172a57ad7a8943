"""Stage ingest: put the raw images under data/raw/<class>/.

    python -m stages.ingest

data.source = data/digits: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes, no
download), upscaled to data.digits_size px so that resize and blur have detail to work on. The
folder data/digits only stands for them (it holds a README), so that data.source is always a path
that dvc.yaml can declare as ingest's dependency: DVC hashes the folder's contents, so adding,
removing or editing an image reruns ingest and everything after it.

data.source = a folder of class subfolders (`<folder>/<class>/<image>`), or a folder already
split into `train/` and optionally `val/` and `test/`, each with class subfolders (every
subfolder of the source is one of those three): each image is decoded (the same reader predict
uses) and copied as it is, to data/raw/<class>/ or data/raw/<split>/<class>/, under a name that is
valid UTF-8. What is not an image is skipped and counted; a corrupt, truncated or empty image stops
ingest with its path, or with data.skip_corrupt is skipped and listed. Images with the same decoded
pixels are listed and, with data.duplicates: drop, left out (the same picture in two given splits
is an error: it would leak into evaluation); near-duplicates (a resized copy, a re-encoded JPEG)
within a class are listed. data/raw/ingest.json records the layout and all of this, for split and
augment to read.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from classifier import paths
from classifier.errors import PipelineError, printable, run_stage
from classifier.folder_listing import list_class_folder
from classifier.duplicates import near_duplicates, thumbnail
from classifier.image_files import pixel_hash, read_image, write_png
from classifier.outputs import atomic_dir, write_json
from classifier.params.checks import load_sections
from classifier.params.data import DataParams
from classifier.stale_summary import retire_summary

PARAMS = (DataParams,)
DEPS = (paths.PARAMS_OK, "${data.source}")  # PARAMS_OK: the params stage runs first; ${data.source}: DVC
# templating, the folder data.source names, hashed like any dependency
OUTS = (paths.RAW_DIR,)


def digits_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 N×size×size (ink bright on black) and int labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # pixel values are 0..16
    big = np.stack([cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC) for img in small])
    return big, digits.target


def write_digits(out: Path, size: int) -> int:
    images, labels = digits_images(size)
    for i, (image, label) in enumerate(zip(images, labels)):
        class_dir = out / str(label)
        class_dir.mkdir(exist_ok=True)
        write_png(class_dir / f"digit_{i:04d}.png", image[:, :, None])
    return len(images)


def source_splits(source: Path) -> list[str]:
    """The splits of a pre-split folder (train first), or [] for a folder of class subfolders."""
    if not source.is_dir():
        raise PipelineError(f"data folder {printable(source)} not found (data.source in params.yaml)")
    subfolders = {p.name for p in source.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")}
    if "train" in subfolders and subfolders <= set(paths.SPLITS):
        return [split for split in paths.SPLITS if split in subfolders]
    return []


class Ingest:
    """Copies the images of one source, split by split, keeping the report of what it saw."""

    def __init__(self, params: DataParams) -> None:
        self.params = params
        self.report: dict = {"source": params.source, "splits": [], "images": 0, "skipped": [], "corrupt": [],
                             "duplicates": [], "near_duplicates": []}
        self.first_seen: dict[str, tuple[str, str]] = {}  # pixel hash -> (split, file)
        self.thumbs: dict[str, list[np.ndarray]] = {}     # class -> thumbnails of its images, every split
        self.files: dict[str, list[str]] = {}             # class -> the files of those thumbnails

    def copy_split(self, folder: Path, out: Path, split: str) -> None:
        """Copy `folder/<class>/...` images to `out/<class>/...`."""
        listing = list_class_folder(folder)
        if not split:  # class folders sit beside the report
            reserved = [label for _, label in listing.files if label == paths.INGEST_REPORT.name]
            if reserved:
                raise PipelineError(f"class folder {printable(folder / reserved[0])}: the name {reserved[0]} is "
                                    f"taken by ingest's report; rename the folder")
        self.report["skipped"] += [printable(p) for p in listing.skipped]
        for path, label in listing.files:
            try:
                image = read_image(path)  # fail now, naming the file, rather than halfway through prepare
            except PipelineError as exc:
                if not self.params.skip_corrupt:
                    raise PipelineError(f"{exc} (set data.skip_corrupt: true to skip such files)") from None
                self.report["corrupt"].append(printable(path))
                continue
            first = self.first_time(image, path, split)
            if not first and self.params.duplicates == "drop":
                continue
            if first:  # a repeat is a duplicate already, not also a near one
                self.thumbs.setdefault(label, []).append(thumbnail(image))
                self.files.setdefault(label, []).append(printable(path))
            within_class = path.relative_to(folder).parts[1:]
            target = out / label / printable(Path(*within_class))  # a name that is valid UTF-8
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            self.report["images"] += 1

    def find_near_duplicates(self) -> None:
        """Resized or re-encoded copies within each class, across the given splits too: listed."""
        for label, vectors in self.thumbs.items():
            self.report["near_duplicates"] += [[self.files[label][later], self.files[label][first]]
                                               for first, later in near_duplicates(np.stack(vectors))]

    def first_time(self, image: np.ndarray, path: Path, split: str) -> bool:
        """Whether these pixels are new; a repeat is listed, and one across given splits raises (drop)."""
        key = pixel_hash(image)
        if key not in self.first_seen:
            self.first_seen[key] = (split, printable(path))
            return True
        first_split, first = self.first_seen[key]
        if first_split != split and self.params.duplicates == "drop":
            raise PipelineError(f"{printable(path)} ({split}) has the same pixels as {first} ({first_split}): the given "
                                f"splits share an image, which leaks it into evaluation; remove one, or set "
                                f"data.duplicates: keep")
        self.report["duplicates"].append([printable(path), first])
        return False


def main() -> None:
    params = load_sections(*PARAMS).data
    retire_summary()  # the scores of the last run no longer describe this data
    ingest = Ingest(params)
    report = ingest.report
    with atomic_dir(paths.RAW_DIR) as out:
        if Path(params.source) == paths.DIGITS_SOURCE:
            report["images"] = write_digits(out, params.digits_size)
        else:
            source = Path(params.source)
            report["splits"] = source_splits(source)
            for split in report["splits"] or [""]:
                ingest.copy_split(source / split, out / split if split else out, split)
            ingest.find_near_duplicates()
        write_json(out / paths.INGEST_REPORT.name, report)
    layout = f"pre-split into {', '.join(report['splits'])}" if report["splits"] else "class folders"
    print(f"ingest: {report['images']} images from {printable(params.source)} ({layout}) -> {paths.RAW_DIR}")
    if report["skipped"]:
        print(f"ingest: skipped {len(report['skipped'])} hidden, non-image, symlinked or special file(s), "
              f"e.g. {report['skipped'][0]}")
    for path in report["corrupt"]:
        print(f"ingest: skipped corrupt image {path}")
    if report["duplicates"]:
        action = "left out" if params.duplicates == "drop" else "kept (data.duplicates: keep)"
        print(f"ingest: {len(report['duplicates'])} duplicate image(s) {action}, e.g. {report['duplicates'][0][0]} "
              f"= {report['duplicates'][0][1]}; all listed in {paths.INGEST_REPORT}")
    if report["near_duplicates"]:
        print(f"ingest: {len(report['near_duplicates'])} near-duplicate image(s) (a resized or re-encoded copy?), "
              f"e.g. {report['near_duplicates'][0][0]} ~ {report['near_duplicates'][0][1]}; listed in "
              f"{paths.INGEST_REPORT}")


if __name__ == "__main__":
    run_stage(main)
