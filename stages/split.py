"""Stage split: train/val/test file lists of data/raw, stratified and seeded.

    python -m stages.split

Classes are first renamed (split.merge), dropped (split.drop), and down-sampled (split.max_per_class,
split.balance). A source that ingest found already split keeps its split: only a missing val or
test is carved out of train, stratified, by the split fractions; down-sampling then applies to
train alone, so the user's evaluation sets stay as given. Otherwise each class is cut by
split.train/val/test. Every split must get split.min_per_split images of every class.

Writes data/split/{train,val,test}.csv (columns path,label: lists, not copies) and
data/split/classes.json (class names, sorted; a label's index there is its class id).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from stages.lib import paths
from stages.lib.datasets import (atomic_dir, downsample, list_class_folder, merge_and_drop, read_json,
                                 retire_summary, stratified_split, write_file_list, write_json)
from stages.lib.errors import PipelineError, run_stage
from stages.lib.params import SplitParams, load_params

PARAMS = ("split",)
DEPS = (paths.RAW_DIR,)
OUTS = (paths.SPLIT_DIR,)


def list_raw(given_splits: list[str]) -> pd.DataFrame:
    """path, label and given split ('' when the source was not split) of every raw image."""
    folders = [(paths.RAW_DIR / split, split) for split in given_splits] or [(paths.RAW_DIR, "")]
    rows = [(path.as_posix(), label, split) for folder, split in folders
            for path, label in list_class_folder(folder).files]
    return pd.DataFrame(rows, columns=["path", "label", "given"])


def assign_splits(files: pd.DataFrame, classes: list[str], params: SplitParams) -> dict[str, pd.DataFrame]:
    """split name -> its rows of `files` (path, label)."""
    class_id = {name: i for i, name in enumerate(classes)}
    rng = np.random.default_rng(params.seed)
    fractions = {"train": params.train, "val": params.val, "test": params.test}
    given = [split for split in paths.SPLITS if (files["given"] == split).any()]
    # One pool, or the given train split: down-sampled, then cut by the fractions into the splits
    # not given (all three for one pool; a missing val or test for a pre-split source).
    pool = files[files["given"] == ("train" if given else "")].reset_index(drop=True)
    pool = pool.iloc[downsample(pool["label"].map(class_id).to_numpy(), params.max_per_class, params.balance,
                                rng)].reset_index(drop=True)
    cut = {split: fraction for split, fraction in fractions.items() if split == "train" or split not in given}
    total = sum(cut.values())
    rows = stratified_split(pool["label"].map(class_id).to_numpy(), {k: v / total for k, v in cut.items()},
                            params.seed, classes, params.min_per_split)
    result = {split: pool.iloc[r] for split, r in rows.items()}
    for split in given:
        if split != "train":
            result[split] = check_given_split(files[files["given"] == split], split, pool, classes, params)
    return {split: result[split] for split in paths.SPLITS}


def check_given_split(rows: pd.DataFrame, split: str, train: pd.DataFrame, classes: list[str],
                      params: SplitParams) -> pd.DataFrame:
    """A val or test split the source came with: its classes must be train's, each with min_per_split images."""
    extra = sorted(set(rows["label"]) - set(train["label"]))
    if extra:
        raise PipelineError(f"{paths.RAW_DIR / split}: class(es) {', '.join(extra)} have no train images")
    counts = rows["label"].value_counts()
    short = [c for c in classes if counts.get(c, 0) < params.min_per_split]
    if short:
        raise PipelineError(f"the given {split} split has fewer than {params.min_per_split} image(s) "
                            f"(split.min_per_split) of class(es) {', '.join(short)}")
    return rows


def main() -> None:
    params = load_params(*PARAMS).split
    retire_summary()  # the scores of the last run no longer describe this data
    report = read_json(paths.INGEST_REPORT)
    files = list_raw(report["splits"])
    files["label"] = merge_and_drop(files["label"].tolist(), dict(params.merge), params.drop)
    files = files[files["label"].notna()].reset_index(drop=True)
    classes = sorted(files["label"].unique())
    splits = assign_splits(files, classes, params)
    with atomic_dir(paths.SPLIT_DIR) as out:
        for split, rows in splits.items():
            write_file_list(out / f"{split}.csv", rows["path"].tolist(), rows["label"].tolist())
        write_json(out / paths.CLASSES_FILE.name, classes)
    source = f"given {', '.join(report['splits'])}" if report["splits"] else "one pool"
    counts = ", ".join(f"{split} {len(rows)}" for split, rows in splits.items())
    print(f"split: {sum(len(r) for r in splits.values())} of {len(files)} images, {len(classes)} classes "
          f"({source}) -> {counts}")


if __name__ == "__main__":
    run_stage(main)
