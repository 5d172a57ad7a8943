"""The label audit (issue 39, item 1): stratified folds, cleanlab's findings on out-of-fold probabilities,
near-duplicates across splits, the stage on and off, and the audit's fixes reaching data/labels.csv."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from classifier.evaluation.audit import (ISSUE_COLUMNS, assign_folds, cross_split_duplicates, issues_table,
                                         label_findings)
from classifier.runtime.errors import PipelineError
from tests.helpers import copy_project, make_image_folder, run_stage_in_process

CLASSES = ["cat", "dog", "owl"]


def test_folds_are_stratified_seeded_and_refuse_a_class_smaller_than_their_count() -> None:
    labels = np.repeat([0, 1, 2], [10, 7, 5])
    folds = assign_folds(labels, CLASSES, 5, seed=3)
    assert all(set(folds[labels == c]) == set(range(5)) for c in range(3))   # every fold holds every class
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 2
    assert np.array_equal(folds, assign_folds(labels, CLASSES, 5, seed=3))
    assert not np.array_equal(folds, assign_folds(labels, CLASSES, 5, seed=4))
    with pytest.raises(PipelineError, match=re.escape("The 'audit.folds' parameter is 6, but class 'owl' has 5 "
                                                      "train+val image(s): every fold needs one of each class; lower "
                                                      "audit.folds to 5")):
        assign_folds(labels, CLASSES, 6, seed=0)
    with pytest.raises(PipelineError, match="class 'owl' has 1 .* add images to the class, or merge or drop it"):
        assign_folds(np.array([0, 0, 1, 1, 2]), CLASSES, 2, seed=0)


@pytest.mark.slow  # cleanlab: about a second
def test_cleanlab_finds_most_flipped_labels_in_out_of_fold_probabilities() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, 1500)
    logits = rng.normal(size=(1500, 10))
    logits[np.arange(1500), truth] += 4
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = truth.copy()
    flipped = rng.choice(1500, 75, replace=False)
    given[flipped] = (given[flipped] + rng.integers(1, 10, 75)) % 10
    findings = label_findings(given, probabilities)
    found = set(np.flatnonzero(findings["label_issue"]))
    assert len(found & set(flipped)) >= 0.8 * 75 and len(found & set(flipped)) >= 0.8 * len(found)
    assert (findings["suggested"].to_numpy()[flipped] == truth[flipped]).mean() > 0.9
    assert findings["label_quality"].to_numpy()[flipped].mean() < findings["label_quality"].mean()


def test_near_duplicates_are_listed_across_splits_only() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)
    images[3] = np.clip(images[0].astype(int) + 1, 0, 255)   # a copy of image 0, one grey level brighter
    images[4] = images[1]                                     # a copy of image 1 in the same split
    splits = np.array(["train", "train", "val", "test", "train", "test"])
    assert cross_split_duplicates(images, splits) == [(0, 3)]


def test_the_issues_table_lists_each_suspect_once_worst_first() -> None:
    keys = np.array([f"data/raw/c/{i}.png" for i in range(5)])
    splits = np.array(["train", "train", "val", "val", "test"])
    labels = np.array([0, 1, 2, 0, 1])
    findings = pd.DataFrame({"label_issue": [True, False, True, False], "label_quality": [0.2, 0.9, 0.01, 0.8],
                             "suggested": [1, 1, 0, 0], "outlier": [True, False, False, False]})
    table = issues_table(keys, splits, labels, CLASSES, findings, [(3, 4)])
    assert list(table.columns) == list(ISSUE_COLUMNS)
    assert table["key"].tolist() == [keys[2], keys[0], keys[3], keys[4]]   # by label quality; test has none
    assert table["issues"].tolist() == ["label", "label+outlier", "near_duplicate", "near_duplicate"]
    assert table.loc[0, "suggested"] == "cat" and table.loc[3, "detail"] == f"like {keys[3]} (val, cat)"


@pytest.mark.slow  # trains two small models
def test_the_stage_audits_labels_a_fix_made_wrong_and_the_audit_fixes_them_back(tmp_path, monkeypatch, capsys) -> None:
    """The digits at 16 px with 12 zeros relabelled as 1 through data/labels.csv (issue 39's loop, run
    backwards): two folds find half of them or more, suggest 0, and --from-audit writes those fixes."""
    project = copy_project(tmp_path / "p", {"train": {"epochs": 8}})
    monkeypatch.chdir(project)
    run_stage_in_process("audit", project)   # off: empty results, at once
    assert json.loads((project / "metrics/audit.json").read_text()) == {}
    assert pd.read_csv(project / "plots/audit/issues.csv").empty
    for stage in ("ingest", "split"):
        run_stage_in_process(stage, project)
    zeros = pd.read_csv(project / "data/split/train.csv", dtype=str).query("label == '0'")["path"].head(12).tolist()
    from tools import relabel
    relabel.main([*zeros, "--to", "1", "--note", "wrong on purpose"])
    from tests.helpers import set_params
    set_params(project, audit={"folds": 2})
    for stage in ("split", "prepare", "augment", "audit"):
        run_stage_in_process(stage, project)
    out = capsys.readouterr().out
    assert re.search(r"audit: fold 2/2: trained on \d+ images, predicted the \d+ it never saw", out), out
    counts = json.loads((project / "metrics/audit.json").read_text())
    issues = pd.read_csv(project / "plots/audit/issues.csv", dtype={"given": str, "suggested": str})
    flagged = issues[issues["issues"].str.contains("label")]
    caught = flagged[flagged["key"].isin(zeros)]
    # A tiny MLP on two folds of 16 px digits: 8 of the 12 found, among 19 flagged (the benchmark measures
    # recall and precision with the default model: benchmarks/label_noise.py).
    assert counts["label_issues"] == len(flagged) and len(caught) >= 6, issues.head(20)
    assert (caught["suggested"] == "0").all()
    probabilities = pd.read_csv(project / "plots/audit/out_of_fold.csv")
    assert len(probabilities) == sum(len(pd.read_csv(f"data/split/{s}.csv")) for s in ("train", "val"))
    assert set(probabilities["fold"]) == {1, 2}

    relabel.main(["--from-audit", "--below", "0.5"])
    fixes = pd.read_csv(project / "data/labels.csv", dtype=str).set_index("key")["label"]
    assert all(fixes[key] == "0" for key in caught[caught["label_quality"] < 0.5]["key"])


@pytest.mark.slow
def test_more_folds_than_a_class_has_images_is_one_line_and_writes_nothing(tmp_path) -> None:
    source = make_image_folder(tmp_path / "photos", {"cat": 12, "dog": 4}, size=(16, 16))
    project = copy_project(tmp_path / "p", {"data": {"source": str(source)}, "audit": {"folds": 5},
                                            "split": {"train": 0.5, "val": 0.25, "test": 0.25}})
    for stage in ("ingest", "split", "prepare", "augment"):
        run_stage_in_process(stage, project)
    with pytest.raises(PipelineError, match=r"^The 'audit.folds' parameter is 5, but class 'dog' has 3 train\+val"):
        run_stage_in_process("audit", project)
    assert not (project / "plots/audit").exists() and not (project / "metrics/audit.json").exists()


@pytest.mark.slow
def test_a_folder_of_colour_jpeg_photos_has_its_misfiled_photos_found(tmp_path, monkeypatch) -> None:
    """Real photographs at small sizes, with no download: 48×48 JPEG crops of scikit-learn's two bundled
    photos (a temple, a flower), 40 of each as class folders, 6 temple crops misfiled under flower. Three
    folds of a small MLP at 24 px flag the misfiled ones the folds audit (4 of 4 here), and little else."""
    import shutil
    import cv2
    from sklearn.datasets import load_sample_images
    rng = np.random.default_rng(0)
    source = tmp_path / "photos"
    for name, photo in zip(("temple", "flower"), load_sample_images().images):
        (source / name).mkdir(parents=True)
        for i in range(40):
            y, x = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
            crop = cv2.resize(photo[y:y + 96, x:x + 96], (48, 48), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(source / name / f"{i:03d}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    for i in range(6):
        shutil.move(source / "temple" / f"{i:03d}.jpg", source / "flower" / f"misfiled_{i}.jpg")
    project = copy_project(tmp_path / "p", {"data": {"source": str(source)}, "audit": {"folds": 3},
                                            "prepare": {"grayscale": False, "image_size": 24},
                                            "augment": {"blur_kernels": []}, "train": {"epochs": 10}})
    monkeypatch.chdir(project)
    for stage in ("ingest", "split", "prepare", "augment", "audit"):
        run_stage_in_process(stage, project)
    audited = pd.read_csv("plots/audit/out_of_fold.csv")["key"]
    misfiled = {key for key in audited if "misfiled_" in key}
    issues = pd.read_csv("plots/audit/issues.csv", dtype=str, keep_default_na=False)
    flagged = set(issues[issues["issues"].str.contains("label")]["key"])
    assert len(misfiled) >= 3 and len(flagged & misfiled) >= len(misfiled) - 1, (misfiled, flagged)
    assert len(flagged - misfiled) <= 6, flagged - misfiled   # 3 here, of the 70 others
    assert set(issues[issues["key"].isin(misfiled)]["suggested"]) <= {"temple"}
