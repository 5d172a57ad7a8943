"""Stage split: stratified, seeded train/val/test file lists of data/raw.

    python -m stages.split

Writes data/split/{train,val,test}.csv (columns path,label: lists, not copies) and
data/split/classes.json (class names, sorted; a label's index there is its class id).
"""
from __future__ import annotations

import numpy as np

from stages.lib import paths
from stages.lib.datasets import atomic_dir, list_class_folder, stratified_split, write_file_list, write_json
from stages.lib.errors import run_stage
from stages.lib.params import load_params

PARAMS = ("split",)
DEPS = (paths.RAW_DIR,)
OUTS = (paths.SPLIT_DIR,)


def main() -> None:
    params = load_params(*PARAMS).split
    listing = list_class_folder(paths.RAW_DIR)
    classes = sorted({label for _, label in listing.files})
    files = [path.as_posix() for path, _ in listing.files]
    class_id = {name: i for i, name in enumerate(classes)}
    labels = np.array([class_id[label] for _, label in listing.files])
    fractions = {"train": params.train, "val": params.val, "test": params.test}
    rows = stratified_split(labels, fractions, params.seed, classes)
    with atomic_dir(paths.SPLIT_DIR) as out:
        for split, split_rows in rows.items():
            write_file_list(out / f"{split}.csv", [files[i] for i in split_rows], [classes[labels[i]] for i in split_rows])
        write_json(out / paths.CLASSES_FILE.name, classes)
    counts = ", ".join(f"{split} {len(r)}" for split, r in rows.items())
    print(f"split: {len(files)} images of {len(classes)} classes -> {counts}")


if __name__ == "__main__":
    run_stage(main)
