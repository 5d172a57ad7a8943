"""The label audit's arithmetic: the folds, and what the out-of-fold probabilities say about each
label (cleanlab), and near-duplicates across splits. stages/audit.py trains the fold models.

cleanlab's rules, applied to every train and val image's out-of-fold probabilities:
- a label issue: cleanlab.filter.find_label_issues (confident learning, prune by noise rate); the
  label quality is cleanlab.rank.get_label_quality_scores (the probability of the given label), the
  suggested label the most probable class;
- an outlier: cleanlab.outlier.OutOfDistribution's score from the probabilities below OUTLIER times
  its median (the threshold cleanlab's Datalab uses for probabilities);
and near-duplicates across splits (a leak: the same picture in train and test) with ingest's own
search (classifier/data/duplicates.py: 16×16 grey thumbnails within 2 grey levels RMS).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from classifier.data.duplicates import near_duplicates, thumbnail
from classifier.runtime.errors import PipelineError

OUTLIER = 0.13  # cleanlab Datalab's default threshold for outliers scored from predicted probabilities
ISSUE_COLUMNS = ("key", "split", "issues", "given", "suggested", "label_quality", "detail")


def assign_folds(labels: np.ndarray, classes: list[str], folds: int, seed: int) -> np.ndarray:
    """Each image's fold, 0..folds-1, stratified: every class dealt round-robin in a seeded shuffle, so
    each fold holds every class. A class with fewer images than folds is refused, naming it."""
    counts = np.bincount(labels, minlength=len(classes))
    smallest = int(counts.argmin())
    if counts[smallest] < folds:
        fewest = int(counts[smallest])
        remedy = (f"lower audit.folds to {fewest}" if fewest >= 2 else
                  "add images to the class, or merge or drop it (split.merge, split.drop)")
        raise PipelineError(f"The 'audit.folds' parameter is {folds}, but class '{classes[smallest]}' has {fewest} "
                            f"train+val image(s): every fold needs one of each class; {remedy}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for label in range(len(classes)):
        rows = rng.permutation(np.flatnonzero(labels == label))
        fold[rows] = np.arange(len(rows)) % folds
    return fold


def label_findings(labels: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """Per image: label_issue (bool), label_quality, suggested (class id), outlier (bool)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.outlier import OutOfDistribution
    from cleanlab.rank import get_label_quality_scores
    issue = find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate", n_jobs=1)
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    ood = OutOfDistribution().fit_score(pred_probs=probabilities, labels=labels, verbose=False)
    return pd.DataFrame({"label_issue": issue, "label_quality": quality, "suggested": probabilities.argmax(1),
                         "outlier": ood < OUTLIER * np.median(ood)})


def cross_split_duplicates(images: np.ndarray, splits: np.ndarray) -> list[tuple[int, int]]:
    """(i, j) pairs of near-duplicate images (uint8 N×H×W×C) in different splits."""
    thumbs = np.stack([thumbnail(image) for image in images]) if len(images) else np.empty((0, 256), np.float32)
    return [(i, j) for i, j in near_duplicates(thumbs) if splits[i] != splits[j]]


def issues_table(keys: np.ndarray, splits: np.ndarray, labels: np.ndarray, classes: list[str],
                 findings: pd.DataFrame, duplicates: list[tuple[int, int]]) -> pd.DataFrame:
    """plots/audit/issues.csv: one row per suspect image (a label issue, an outlier, or one of a near-
    duplicate pair across splits), worst label quality first. `keys`, `splits` and `labels` cover every
    image scored; `findings` its first len(findings) (train and val, which the folds predicted)."""
    audited = len(findings)
    rows: dict[int, dict] = {}

    def row(i: int) -> dict:
        found = findings.iloc[i] if i < audited else None
        return rows.setdefault(i, {
            "key": keys[i], "split": splits[i], "issues": [], "given": classes[labels[i]],
            "suggested": classes[int(found["suggested"])] if found is not None else "",
            "label_quality": round(float(found["label_quality"]), 4) if found is not None else np.nan, "detail": ""})
    for i in np.flatnonzero(findings["label_issue"].to_numpy()):
        row(int(i))["issues"].append("label")
    for i in np.flatnonzero(findings["outlier"].to_numpy()):
        row(int(i))["issues"].append("outlier")
    for i, j in duplicates:
        for a, b in ((i, j), (j, i)):
            row(a)["issues"].append("near_duplicate")
            row(a)["detail"] = f"like {keys[b]} ({splits[b]}, {classes[labels[b]]})"
    table = pd.DataFrame(list(rows.values()), columns=list(ISSUE_COLUMNS))
    table["issues"] = table["issues"].map(lambda found: "+".join(dict.fromkeys(found)))
    return table.sort_values(["label_quality", "key"], na_position="last", kind="stable").reset_index(drop=True)
