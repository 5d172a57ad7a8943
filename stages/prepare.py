"""Stage prepare: decode, convert colour and resize every split into arrays.

    python -m stages.prepare

Writes data/prepared/{train,val,test}/ array sets (images.npy uint8 N×H×W×C, labels.npy,
index.csv) and data/prepared/stats.json: the preprocessing contract (classifier/data/preprocessing.py:
the prepare params and the per-channel normalisation x' = (x / 255 - mean) / std that train,
evaluate and predict apply, measured on the train split only) and the train pixels' statistics.

Resize (prepare.resize): stretch changes the aspect ratio; crop cuts the centre to the target's
aspect ratio first; pad letterboxes, only when asked, with pad_value or a mirrored border.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from classifier.runtime import paths
from classifier.data.artifacts import allocate_images, class_ids, finish_array_set, read_file_list, read_json
from classifier.data.decode_cache import PreparedCache
from classifier.runtime.errors import PipelineError, run_stage
from classifier.data.image_files import decode_image
from classifier.data.image_format import format_image
from classifier.runtime.outputs import atomic_dir
from classifier.params.checks import load_sections
from classifier.params.prepare import PrepareParams
from classifier.data.preprocessing import Preprocessing
from classifier.data.shards import RawImages
from classifier.runtime.stale_summary import retire_summary

PARAMS = (PrepareParams,)
DEPS = (paths.SPLIT_DIR, paths.RAW_DIR)
OUTS = (paths.PREPARED_DIR,)


def prepare_split(split: str, out: Path, classes: list[str], params: PrepareParams, raw: RawImages,
                  cache: PreparedCache) -> np.ndarray:
    files = read_file_list(paths.SPLIT_DIR / f"{split}.csv")
    missing = [key for key in files["path"] if key not in raw]
    if missing:  # the split of an earlier data/raw (a stage run by hand after ingest alone)
        raise PipelineError(f"{paths.SPLIT_DIR / split}.csv lists {len(missing)} image(s) that {paths.RAW_DIR} does "
                            f"not hold (e.g. {missing[0]}): {paths.SPLIT_DIR} is older than {paths.RAW_DIR}; "
                            f"`dvc repro prepare` brings both up to date")
    class_id = class_ids(classes)
    folder = out / split
    folder.mkdir()
    images = allocate_images(folder, (len(files), *cache.shape))
    for row, path in enumerate(files["path"]):
        images[row] = prepared_image(path, params, raw, cache)
    labels = np.array([class_id[label] for label in files["label"]], dtype=np.int64)
    index = pd.DataFrame({"source": files["path"], "split": split, "augmentation": "original"})
    images.flush()
    finish_array_set(folder, labels, index)
    return images


def prepared_image(key: str, params: PrepareParams, raw: RawImages, cache: PreparedCache) -> np.ndarray:
    """The image `key` as prepare's params make it: from the cache when these bytes were prepared
    the same way before (bit-exact either way: OpenCV runs its portable code)."""
    sha1 = raw.sha1[key]
    image = cache.get(sha1)
    if image is None:
        image = format_image(decode_image(raw.bytes(key), key), params)
        cache.put(sha1, image)
    return image


def main() -> None:
    params = load_sections(*PARAMS).prepare
    retire_summary()  # the scores of the last run no longer describe this data
    classes = read_json(paths.CLASSES_FILE)
    raw = RawImages(paths.RAW_DIR)
    cache = PreparedCache(repr(params), (*params.image_size, 1 if params.grayscale else 3))
    with cache, atomic_dir(paths.PREPARED_DIR) as out:
        for split in paths.SPLITS:
            images = prepare_split(split, out, classes, params, raw, cache)
            if split == "train":
                preprocessing, train_pixels = Preprocessing.measure(params, images)
            print(f"prepare: {split} {images.shape[0]} images of {images.shape[1]}×{images.shape[2]}×{images.shape[3]}")
            del images  # release the memory map before the folder is renamed
        preprocessing.write(out / paths.STATS_FILE.name, train_pixels)
    if cache.hits:  # not in the outputs: they are the same bytes whatever the cache held
        print(f"prepare: {cache.misses} image(s) decoded, {cache.hits} prepared this way before (by their bytes)")
    if cache.damaged:
        print(f"prepare: {cache.damage_note()}: prepared again")


if __name__ == "__main__":
    run_stage(main)
