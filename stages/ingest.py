"""Stage ingest: put the raw images into data/raw, as a few shards and an index.

    python -m stages.ingest

data.source = data/digits: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes, no
download), upscaled to data.digits_size px so that resize and blur have detail to work on. The
folder data/digits only stands for them (it holds a README), so that data.source is always a path
that dvc.yaml can declare as ingest's dependency: DVC hashes the folder's contents, so adding,
removing or editing an image reruns ingest and everything after it.

data.source = a folder of class subfolders (`<folder>/<class>/<image>`), or a folder already
split into `train/` and optionally `val/` and `test/`, each with class subfolders (every
subfolder of the source is one of those three), or either packed as a .tar or .zip archive or a
folder of .tar shards (classifier/data/sources.py; `python -m tools.pack` makes them): each image is
decoded (the same reader predict uses) and its bytes are stored as they are in data/raw's shards
(classifier/data/shards.py), under the key data/raw/[<split>/]<class>/<file>, a name that is valid
UTF-8. What is not an image is skipped and counted; a corrupt, truncated or empty image stops
ingest with its path, or with data.skip_corrupt is skipped and listed. Images with the same decoded
pixels are listed and, with data.duplicates: drop, left out (the same picture in two given splits
is an error: it would leak into evaluation); near-duplicates (a resized copy, a re-encoded JPEG)
within a class are listed. data/raw/ingest.json records the layout and all of this, for split and
augment to read.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from classifier.runtime import paths
from classifier.data.decode_cache import DecodeCache
from classifier.data.duplicates import near_duplicates, thumbnail
from classifier.runtime.errors import PipelineError, printable, run_stage
from classifier.data.opencv import cv2
from classifier.data.image_files import decode_image, encode_png, pixel_hash
from classifier.runtime.outputs import atomic_dir, write_json
from classifier.params.checks import load_sections
from classifier.params.data import DataParams
from classifier.data.shards import ShardWriter, raw_key, shard_count
from classifier.data.sources import SourceImage, list_source
from classifier.runtime.stale_summary import retire_summary

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
    encoded = [encode_png(image[:, :, None]) for image in images]
    shards = ShardWriter(out, shard_count(sum(map(len, encoded))))
    # In the order split lists them: by class name, then file name (as a folder of classes is listed).
    for i in sorted(range(len(labels)), key=lambda i: (str(labels[i]), i)):
        shards.add(raw_key("", str(labels[i]), f"digit_{i:04d}.png"), "", str(labels[i]), encoded[i])
    return shards.close()


class Ingest:
    """Copies the images of one source, split by split, keeping the report of what it saw."""

    def __init__(self, params: DataParams, cache: DecodeCache) -> None:
        self.params, self.cache = params, cache
        self.report: dict = {"source": params.source, "splits": [], "images": 0, "skipped": [], "corrupt": [],
                             "duplicates": [], "near_duplicates": []}
        self.first_seen: dict[str, tuple[str, str]] = {}  # pixel hash -> (split, file)
        self.thumbs: dict[str, list[np.ndarray]] = {}     # class -> thumbnails of its images, every split
        self.files: dict[str, list[str]] = {}             # class -> the files of those thumbnails

    def store(self, images: list[SourceImage], shards: ShardWriter, split: str) -> None:
        """Check and store one split's images in the shards, keyed data/raw/[<split>/]<class>/<file>."""
        reserved = [image.name for image in images if not split and image.label == paths.INGEST_REPORT.name]
        if reserved:  # the report sits beside the class folders
            raise PipelineError(f"class folder of {reserved[0]}: the name {paths.INGEST_REPORT.name} is taken by "
                                f"ingest's report; rename the folder")
        for source in images:
            data = source.read()
            sha1 = hashlib.sha1(data).hexdigest()
            known = self.cache.get(sha1)  # these bytes decoded before: their pixel hash and thumbnail
            if known is None:
                try:
                    image = decode_image(data, source.name)  # fail now, naming the file, not halfway through prepare
                except PipelineError as exc:
                    if not self.params.skip_corrupt:
                        raise PipelineError(f"{exc} (set data.skip_corrupt: true to skip such files)") from None
                    self.report["corrupt"].append(source.name)
                    continue
                known = pixel_hash(image), thumbnail(image)
                self.cache.put(sha1, *known)
            pixels, thumb = known
            first = self.first_time(pixels, source.name, split)
            if not first and self.params.duplicates == "drop":
                continue
            if first:  # a repeat is a duplicate already, not also a near one
                self.thumbs.setdefault(source.label, []).append(thumb)
                self.files.setdefault(source.label, []).append(source.name)
            shards.add(raw_key(split, source.label, source.within_class), split, source.label, data, sha1)
            self.report["images"] += 1

    def find_near_duplicates(self) -> None:
        """Resized or re-encoded copies within each class, across the given splits too: listed."""
        for label, vectors in self.thumbs.items():
            self.report["near_duplicates"] += [[self.files[label][later], self.files[label][first]]
                                               for first, later in near_duplicates(np.stack(vectors))]

    def first_time(self, key: str, name: str, split: str) -> bool:
        """Whether these pixels (their hash) are new; a repeat is listed, and one across given splits
        raises (drop)."""
        if key not in self.first_seen:
            self.first_seen[key] = (split, name)
            return True
        first_split, first = self.first_seen[key]
        if first_split != split and self.params.duplicates == "drop":
            raise PipelineError(f"{name} ({split}) has the same pixels as {first} ({first_split}): the given "
                                f"splits share an image, which leaks it into evaluation; remove one, or set "
                                f"data.duplicates: keep")
        self.report["duplicates"].append([name, first])
        return False


def main() -> None:
    params = load_sections(*PARAMS).data
    retire_summary()  # the scores of the last run no longer describe this data
    cache = DecodeCache()
    ingest = Ingest(params, cache)
    report = ingest.report
    with cache, atomic_dir(paths.RAW_DIR) as out:  # what was decoded is kept, also when ingest fails
        if Path(params.source) == paths.DIGITS_SOURCE:
            report["images"] = write_digits(out, params.digits_size)
        else:
            source = list_source(Path(params.source))
            report["splits"], report["skipped"] = source.splits, source.skipped
            shards = ShardWriter(out, shard_count(sum(i.size for images in source.images.values() for i in images)))
            for split, images in source.images.items():
                ingest.store(images, shards, split)
            shards.close()
            ingest.find_near_duplicates()
        write_json(out / paths.INGEST_REPORT.name, report)
    layout = f"pre-split into {', '.join(report['splits'])}" if report["splits"] else "class folders"
    # Not in ingest.json: the same source must give the same bytes, whatever the cache held.
    known = (f"; {ingest.cache.misses} decoded, {ingest.cache.hits} known by their bytes"
             if ingest.cache.hits else "")
    known += f"; {ingest.cache.damage_note()} decoded again" if ingest.cache.damaged else ""
    print(f"ingest: {report['images']} images from {printable(params.source)} ({layout}) -> {paths.RAW_DIR} "
          f"({len(list(paths.RAW_DIR.glob('shard-*.bin')))} shard(s){known})")
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
