"""Stage ingest: put the raw images under data/raw/<class>/.

    python -m stages.ingest

data.source = digits: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes, no download),
upscaled to data.digits_size px so that resize and blur have detail to work on.
data.source = a folder of class subfolders: each image is checked (it must decode) and copied
as it is; hidden and non-image files are skipped and counted.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from stages.lib import paths
from stages.lib.datasets import atomic_dir, list_class_folder, read_image, write_png
from stages.lib.errors import run_stage
from stages.lib.params import load_params

PARAMS = ("data",)
DEPS: tuple[Path, ...] = ()
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


def copy_folder(source: Path, out: Path) -> int:
    listing = list_class_folder(source)
    for path, label in listing.files:
        read_image(path)  # fail now, naming the file, rather than halfway through prepare
        target = out / label / path.relative_to(source / label)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    if listing.skipped:
        print(f"ingest: skipped {len(listing.skipped)} hidden or non-image file(s), e.g. {listing.skipped[0]}")
    return len(listing.files)


def main() -> None:
    params = load_params(*PARAMS).data
    with atomic_dir(paths.RAW_DIR) as out:
        if params.source == "digits":
            count = write_digits(out, params.digits_size)
        else:
            count = copy_folder(Path(params.source), out)
    print(f"ingest: {count} images from {params.source} -> {paths.RAW_DIR}")


if __name__ == "__main__":
    run_stage(main)
