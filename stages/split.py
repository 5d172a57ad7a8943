"""Stage split: train/val/test file lists of data/raw's images, stratified and seeded.

    python -m stages.split

Classes are first renamed (split.merge), dropped (split.drop), and down-sampled (split.max_per_class,
split.balance). A source that ingest found already split keeps its split (a lone val/ may serve as
the test set: split.given_val): only a missing val or test is carved out of train, stratified, by
the split fractions; down-sampling then applies to
train alone, so the user's evaluation sets stay as given. Otherwise each class is cut by
split.train/val/test. Every split must get split.min_per_split images of every class. Last, the label
fixes of data/labels.csv (an image relabelled or dropped, by its key) are applied where each image
landed: the splits are drawn from the labels ingest read, so a fixed image stays in its split and a
test set stays the same images across label fixes (less those dropped).

Reads data/raw/index.csv (the images' keys, given splits and labels) and data/labels.csv. Writes
data/split/{train,val,test}.csv (columns path,label: each image's key in data/raw, lists, not copies) and
data/split/classes.json (class names, sorted; a label's index there is its class id).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from classifier.runtime import paths
from classifier.data.artifacts import class_ids, read_json, write_file_list
from classifier.data.label_fixes import apply_label_fixes, check_label_fixes, read_label_fixes
from classifier.runtime.errors import PipelineError, run_stage
from classifier.runtime.outputs import atomic_dir, write_json
from classifier.params.checks import load_sections
from classifier.params.split import SplitParams
from classifier.data.shards import read_index
from classifier.runtime.stale_summary import retire_summary

PARAMS = (SplitParams,)
DEPS = (paths.RAW_DIR, paths.LABEL_FIXES)
OUTS = (paths.SPLIT_DIR,)


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


def renamed(label: str, merge: dict[str, str], drop: tuple[str, ...]) -> str | None:
    """A class name after split.merge, None when split.drop leaves it out."""
    label = merge.get(label, label)
    return None if label in drop else label


def merge_and_drop(labels: list[str], merge: dict[str, str], drop: tuple[str, ...]) -> list[str | None]:
    """Rename classes by `merge` ({old: new}), then drop the classes in `drop` (names after the
    merge): returns the new label of each row, None for a dropped row. Unknown names raise."""
    present = sorted(set(labels))
    unknown = sorted(set(merge) - set(present))
    if unknown:
        raise PipelineError(f"The 'split.merge' parameter names unknown class(es) {', '.join(unknown)}; "
                            f"classes: {', '.join(present)}")
    after_merge = sorted({merge.get(label, label) for label in present})
    unknown = sorted(set(drop) - set(after_merge))
    if unknown:
        raise PipelineError(f"The 'split.drop' parameter names unknown class(es) {', '.join(unknown)}; "
                            f"classes after split.merge: {', '.join(after_merge)}")
    kept = [renamed(label, merge, drop) for label in labels]
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


def list_raw() -> pd.DataFrame:
    """path (its key), label and given split ('' when the source was not split) of every raw image,
    in ingest's order."""
    index = read_index(paths.RAW_DIR)
    return pd.DataFrame({"path": index["key"], "label": index["label"], "given": index["split"]})


def assign_splits(files: pd.DataFrame, classes: list[str], params: SplitParams) -> dict[str, pd.DataFrame]:
    """split name -> its rows of `files` (path, label)."""
    files = as_given(files, params)
    class_id = class_ids(classes)
    rng = np.random.default_rng(params.seed)
    fractions = {"train": params.train, "val": params.val, "test": params.test}
    given = [split for split in paths.SPLITS if (files["given"] == split).any()]
    # One pool, or the given train split: down-sampled, then cut by the fractions into the splits
    # not given (all three for one pool; a missing val or test for a pre-split source).
    pool = files[files["given"] == ("train" if given else "")].reset_index(drop=True)
    pool = pool.iloc[downsample(pool["label"].map(class_id).to_numpy(), params.max_per_class, params.balance,
                                rng)].reset_index(drop=True)
    val_is_test = given == ["train", "test"] and params.missing_val == "test"  # all of train/ trains
    cut = {split: fraction for split, fraction in fractions.items()
           if split == "train" or (split not in given and not (split == "val" and val_is_test))}
    total = sum(cut.values())
    rows = stratified_split(pool["label"].map(class_id).to_numpy(), {k: v / total for k, v in cut.items()},
                            params.seed, classes, params.min_per_split)
    result = {split: pool.iloc[r] for split, r in rows.items()}
    for split in given:
        if split != "train":
            result[split] = check_given_split(files[files["given"] == split], split, pool, classes, params)
    if val_is_test:
        result["val"] = result["test"]
    return {split: result[split] for split in paths.SPLITS}


def as_given(files: pd.DataFrame, params: SplitParams) -> pd.DataFrame:
    """split.given_val: test makes the val/ of a train/ + val/ source its test set."""
    if params.given_val == "test" and set(files["given"]) == {"train", "val"}:
        return files.assign(given=files["given"].replace("val", "test"))
    return files


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


def fixed_splits(splits: dict[str, pd.DataFrame], fixes: dict, classes: list[str],
                 params: SplitParams) -> dict[str, pd.DataFrame]:
    """data/labels.csv applied to each split's rows (where each image landed), said in one line; a split
    left with fewer than split.min_per_split images of a class by the fixes is refused, naming them."""
    relabelled, dropped = set(), set()
    for split, rows in splits.items():
        splits[split], more_relabelled, more_dropped = apply_label_fixes(
            rows, fixes, lambda label: renamed(label, dict(params.merge), params.drop))
        relabelled, dropped = relabelled | more_relabelled, dropped | more_dropped
        counts = splits[split]["label"].value_counts()
        short = [c for c in classes if counts.get(c, 0) < params.min_per_split]
        if short:
            raise PipelineError(f"{paths.LABEL_FIXES}: with its fixes the {split} split has fewer than "
                                f"{params.min_per_split} image(s) (split.min_per_split) of class(es) {', '.join(short)}: "
                                "fix or drop fewer of them")
    print(f"split: label fixes in {paths.LABEL_FIXES}: {len(relabelled)} relabelled, {len(dropped)} dropped (each "
          "image in the split it was drawn in)")
    return splits


def main() -> None:
    params = load_sections(*PARAMS).split
    retire_summary()  # the scores of the last run no longer describe this data
    report = read_json(paths.INGEST_REPORT)
    files = list_raw()
    fixes = read_label_fixes(paths.LABEL_FIXES)
    check_label_fixes(fixes.values(), dict(zip(files["path"], files["label"])), str(paths.LABEL_FIXES))
    files["label"] = merge_and_drop(files["label"].tolist(), dict(params.merge), params.drop)
    files = files[files["label"].notna()].reset_index(drop=True)
    classes = sorted(files["label"].unique())
    splits = assign_splits(files, classes, params)
    if fixes:
        splits = fixed_splits(splits, fixes, classes, params)
    with atomic_dir(paths.SPLIT_DIR) as out:
        for split, rows in splits.items():
            write_file_list(out / f"{split}.csv", rows["path"].tolist(), rows["label"].tolist())
        write_json(out / paths.CLASSES_FILE.name, classes)
    source = f"given {', '.join(report['splits'])}" if report["splits"] else "one pool"
    if report["splits"] == ["train", "test"] and params.missing_val == "test":
        source += "; val is the given test split (split.missing_val: test)"
    if report["splits"] == ["train", "val"] and params.given_val == "test":
        source += "; the given val/ is the test set, val cut out of train/ (split.given_val: test)"
    counts = ", ".join(f"{split} {len(rows)}" for split, rows in splits.items())
    print(f"split: {sum(len(r) for r in splits.values())} of {len(files)} images, {len(classes)} classes "
          f"({source}) -> {counts}")


if __name__ == "__main__":
    run_stage(main)
