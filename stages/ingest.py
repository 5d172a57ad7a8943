"""Stage ingest: put the raw images under data/raw/<class>/.

    python -m stages.ingest

data.source = data/digits: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes, no
download), upscaled to data.digits_size px so that resize and blur have detail to work on. The
folder data/digits only stands for them (it holds a README), so that data.source is always a path
that dvc.yaml can declare as ingest's dependency: DVC hashes the folder's contents, so adding,
removing or editing an image reruns ingest and everything after it.
data.source = a folder of class subfolders (`<folder>/<class>/<image>`), or a folder already
split into `train/` and optionally `val/` and `test/`, each with class subfolders (every
subfolder of the source is one of those three): each image is checked (it must decode) and
copied as it is, to data/raw/<class>/ or data/raw/<split>/<class>/. Hidden and non-image files
are skipped and counted; a corrupt or empty image stops ingest with its path, or with
data.skip_corrupt is skipped and listed. data/raw/ingest.json records the layout and what was
skipped, for split to read.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from stages.lib import paths
from stages.lib.datasets import atomic_dir, list_class_folder, read_image, write_json, write_png
from stages.lib.errors import PipelineError, run_stage
from stages.lib.params import load_params

PARAMS = ("data",)
DEPS = ("${data.source}",)  # DVC templating: the folder data.source names, hashed like any dependency
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
        raise PipelineError(f"data folder {source} not found (data.source in params.yaml)")
    subfolders = {p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if "train" in subfolders and subfolders <= set(paths.SPLITS):
        return [split for split in paths.SPLITS if split in subfolders]
    return []


def copy_images(folder: Path, out: Path, skip_corrupt: bool, report: dict) -> int:
    """Copy `folder/<class>/...` images to `out/<class>/...`; returns how many were copied."""
    listing = list_class_folder(folder)
    report["skipped"] += [str(p) for p in listing.skipped]
    copied = 0
    for path, label in listing.files:
        try:
            read_image(path)  # fail now, naming the file, rather than halfway through prepare
        except PipelineError as exc:
            if not skip_corrupt:
                raise PipelineError(f"{exc} (set data.skip_corrupt: true to skip such files)") from None
            report["corrupt"].append(str(path))
            continue
        target = out / label / path.relative_to(folder / label)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied += 1
    return copied


def main() -> None:
    params = load_params(*PARAMS).data
    report: dict = {"source": params.source, "splits": [], "skipped": [], "corrupt": []}
    with atomic_dir(paths.RAW_DIR) as out:
        if Path(params.source) == paths.DIGITS_SOURCE:
            count = write_digits(out, params.digits_size)
        else:
            source = Path(params.source)
            report["splits"] = source_splits(source)
            folders = [(source / split, out / split) for split in report["splits"]] or [(source, out)]
            count = sum(copy_images(src, dst, params.skip_corrupt, report) for src, dst in folders)
        report["images"] = count
        write_json(out / paths.INGEST_REPORT.name, report)
    layout = f"pre-split into {', '.join(report['splits'])}" if report["splits"] else "class folders"
    print(f"ingest: {count} images from {params.source} ({layout}) -> {paths.RAW_DIR}")
    if report["skipped"]:
        print(f"ingest: skipped {len(report['skipped'])} hidden or non-image file(s), e.g. {report['skipped'][0]}")
    for path in report["corrupt"]:
        print(f"ingest: skipped corrupt image {path}")


if __name__ == "__main__":
    run_stage(main)
