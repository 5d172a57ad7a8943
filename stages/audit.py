"""Stage audit: are the labels right? With audit.folds = K >= 2, train K models on K folds of train+val
(stratified, seeded by audit.seed), each exactly as train trains (model, train and online-augmentation
params, the augmented copies of its train images, train's own loop) on every image but its fold's, and
predict the fold it never saw; from those out-of-fold probabilities cleanlab lists the labels they
contradict, and outliers; near-duplicates across train, val and test are listed too
(classifier/evaluation/audit.py). With audit.folds: 0, the default, it writes empty results at once
and imports nothing heavy: the default `dvc repro` pays only its start.

    python -m stages.audit            (dvc exp run -S audit.folds=5)

Writes metrics/audit.json (counts: label issues, outliers, near-duplicate pairs; `dvc exp show`
columns; {} when off), plots/audit/issues.csv (one row per suspect: its data/raw key, split, issues,
given and suggested label, label quality, worst first; what `python -m tools.relabel --from-audit`
reads) and plots/audit/out_of_fold.csv (every train and val image's fold and probabilities).

The fold models keep their last epoch (train.checkpoint: best and train.patience would pick the epoch
by the held-out fold's loss, which has seen the labels being judged); they run in this one process
(train.processes is train's). The time is K trainings of (K-1)/K of train+val, printed per fold.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from classifier.evaluation.audit import ISSUE_COLUMNS, assign_folds, cross_split_duplicates, issues_table, label_findings
from classifier.params.audit import AuditParams
from classifier.params.checks import Sections, load_sections
from classifier.params.model import ModelParams
from classifier.params.online_augment import OnlineAugmentParams
from classifier.params.train import TrainParams, check_with_model
from classifier.runtime import paths
from classifier.runtime.errors import run_stage
from classifier.runtime.outputs import staged_outputs, write_json
from classifier.training import cpu_kernels

PARAMS = (AuditParams, ModelParams, TrainParams, OnlineAugmentParams)
DEPS = (paths.AUGMENTED_DIR, paths.PREPARED_DIR, paths.SPLIT_DIR, paths.PRETRAINED_DIR)
OUTS = (paths.AUDIT_METRICS, paths.AUDIT_PLOTS)


@dataclasses.dataclass
class Audited:
    """Every train, val and test image (prepared, in that order); the first `audited` (train and val)
    with out-of-fold probabilities."""
    keys: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    images: np.ndarray
    classes: list[str]
    folds: np.ndarray          # of the audited images
    probabilities: np.ndarray  # audited × classes

    @property
    def audited(self) -> int:
        return len(self.folds)


def out_of_fold(params: Sections, log) -> Audited:
    """Train the fold models and predict each fold with the model that never saw it."""
    # Imported here: with audit.folds 0 the stage ends before torch's seconds of imports.
    import torch
    from classifier.augment.online import online_augment
    from classifier.data.artifacts import load_array_set
    from classifier.models.inference import predict_logits
    from classifier.models.registry import InputShape, build_model
    from classifier.training.device_dataset import DeviceDataset
    from classifier.training.devices import claim_device, select_device
    from classifier.training.loop import FitData, Hooks, fit_phases, load_training_inputs
    from classifier.training.optim import class_weights
    classes, preprocessing, augmented, val = load_training_inputs(params.model)
    sets = {"train": load_array_set(paths.PREPARED_DIR / "train"), "val": val,
            "test": load_array_set(paths.PREPARED_DIR / "test")}
    keys = np.concatenate([sets[s].index["source"].to_numpy() for s in paths.SPLITS])
    splits = np.concatenate([[s] * len(sets[s].labels) for s in paths.SPLITS])
    labels = np.concatenate([sets[s].labels for s in paths.SPLITS])
    images = np.concatenate([np.asarray(sets[s].images) for s in paths.SPLITS])
    audited = len(sets["train"].labels) + len(sets["val"].labels)
    folds = assign_folds(labels[:audited], classes, params.audit.folds, params.audit.seed)
    fold_of = dict(zip(keys[:audited], folds))
    # What a fold model trains on: train's augmented rows (each its source image's fold) and val's images.
    pool_images = np.concatenate([augmented.images, sets["val"].images])
    pool_labels = np.concatenate([augmented.labels, sets["val"].labels])
    pool_folds = np.concatenate([augmented.index["source"].map(fold_of).to_numpy(), folds[len(sets["train"].labels):]])
    device = claim_device(select_device(params.train.device), log)
    normalize = preprocessing.normalizer(device)
    augment = online_augment(params.augment, params.train, len(classes))
    fold_params = dataclasses.replace(params.train, checkpoint="last", patience=0)
    shape = InputShape(*preprocessing.input_shape, len(classes))
    probabilities = np.zeros((audited, len(classes)))
    for fold in range(params.audit.folds):
        start = time.monotonic()
        rows, held = np.flatnonzero(pool_folds != fold), np.flatnonzero(folds == fold)
        torch.manual_seed(params.train.seed)
        model = build_model(params.model, shape).to(device)
        data = FitData(DeviceDataset(pool_images, pool_labels, device, rows=rows), None, normalize,
                       class_weights(params.train.class_weights, pool_labels[rows], len(classes)), augment)
        model.load_state_dict(fit_phases(model, data, fold_params, Hooks(log=lambda _: None)).saved("last")[0])
        logits = predict_logits(model, DeviceDataset(images[:audited], labels[:audited], device, rows=held), normalize,
                                amp=params.train.amp)
        probabilities[held] = torch.softmax(logits.float(), 1).cpu().numpy()
        log(f"audit: fold {fold + 1}/{params.audit.folds}: trained on {len(rows)} images, predicted the {len(held)} "
            f"it never saw ({time.monotonic() - start:.1f} s)")
    return Audited(keys, splits, labels, images, classes, folds, probabilities)


def out_of_fold_table(result: Audited) -> pd.DataFrame:
    n = result.audited
    table = pd.DataFrame({"key": result.keys[:n], "split": result.splits[:n], "fold": result.folds + 1,
                          "given": np.asarray(result.classes, dtype=object)[result.labels[:n]]})
    return pd.concat([table, pd.DataFrame(result.probabilities.round(6), columns=result.classes)], axis=1)


def write_outputs(counts: dict, issues: pd.DataFrame, out_of_fold_rows: pd.DataFrame | None) -> None:
    with staged_outputs(files=(paths.AUDIT_METRICS,), dirs=(paths.AUDIT_PLOTS,)) as staged:
        write_json(staged[paths.AUDIT_METRICS], counts)
        issues.to_csv(staged[paths.AUDIT_PLOTS] / "issues.csv", index=False)
        if out_of_fold_rows is not None:
            out_of_fold_rows.to_csv(staged[paths.AUDIT_PLOTS] / "out_of_fold.csv", index=False)


def main() -> None:
    params = load_sections(*PARAMS)
    if params.audit.folds == 0:
        write_outputs({}, pd.DataFrame(columns=list(ISSUE_COLUMNS)), None)
        print("audit: off (audit.folds: 0); `dvc exp run -S audit.folds=5` lists the labels to check")
        return
    check_with_model(params.train, params.model.freeze)
    if __name__ == "__main__":  # train.cpu_threads's kernels, as train's, before torch is imported (not when off)
        cpu_kernels.pin_for_this_run()
    start = time.monotonic()
    print(f"audit: {params.audit.folds} folds of train+val: {params.audit.folds} models trained as train trains, "
          "each predicting the fold it never saw", flush=True)
    result = out_of_fold(params, lambda line: print(line, flush=True))
    findings = label_findings(result.labels[:result.audited], result.probabilities)
    duplicates = cross_split_duplicates(result.images, result.splits)
    issues = issues_table(result.keys, result.splits, result.labels, result.classes, findings, duplicates)
    counts = {"label_issues": int(findings["label_issue"].sum()), "outliers": int(findings["outlier"].sum()),
              "near_duplicates": len(duplicates)}
    write_outputs(counts, issues, out_of_fold_table(result))
    seconds = time.monotonic() - start
    print(f"audit: {result.audited} train+val images in {seconds:.1f} s ({seconds / params.audit.folds:.1f} s a fold: "
          f"the time grows with audit.folds): {counts['label_issues']} label issues, {counts['outliers']} outliers, "
          f"{counts['near_duplicates']} near-duplicate pairs across splits -> {paths.AUDIT_PLOTS / 'issues.csv'}")
    for _, row in issues[issues["issues"].str.contains("label")].head(5).iterrows():
        print(f"audit:   {row['key']} ({row['split']}): labelled {row['given']}, looks like {row['suggested']} "
              f"(label quality {row['label_quality']:.3f})")
    if counts["label_issues"]:
        print("audit: look at them, then `python -m tools.relabel --from-audit --below 0.1` writes the fixes for "
              "those below that quality to data/labels.csv")


if __name__ == "__main__":
    run_stage(main)
