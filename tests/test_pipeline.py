"""The real pipeline through the real dvc, on a temporary git repo holding a copy of the project
with tiny params: what runs, what reruns after a param change, what DVC can show and diff."""
from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.lib.datasets import load_array_set
from tests.helpers import copy_project, dump_params, dvc, read_params, run

pytestmark = pytest.mark.integration
STAGES = ["ingest", "split", "prepare", "augment", "train", "evaluate"]


def stages_run(result: subprocess.CompletedProcess) -> list[str]:
    """The stages DVC actually executed, in order, from its own output."""
    return re.findall(r"Running stage '(\w+)'", result.stdout + result.stderr)


def git(*args: str, cwd: Path) -> None:
    run(["git", *args], cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A committed project after a first `dvc repro`."""
    root = copy_project(tmp_path_factory.mktemp("project"))
    git("init", "-q", cwd=root)
    git("config", "user.email", "test@example.com", cwd=root)
    git("config", "user.name", "test", cwd=root)
    dvc("init", "-q", cwd=root)
    dvc("config", "core.analytics", "false", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "project", cwd=root)
    result = dvc("repro", cwd=root)
    assert stages_run(result) == STAGES
    git("add", "-A", cwd=root)
    git("commit", "-qm", "first run", cwd=root)
    return root


@pytest.fixture(scope="module")
def lr_experiment(project) -> subprocess.CompletedProcess:
    return dvc("exp", "run", "-n", "lr-small", "-S", "train.lr=0.01", cwd=project)


def test_repro_writes_every_output(project) -> None:
    for path in ["data/raw/0", "data/split/classes.json", "data/prepared/stats.json",
                 "data/augmented/train/images.npy", "models/model.pt", "metrics/train.json",
                 "metrics/eval.json", "metrics/per_class.json", "plots/train/history.csv",
                 "plots/eval/confusion_test.png", "plots/eval/learning_curves.png"]:
        assert (project / path).exists(), path
    assert len(list((project / "data/raw").rglob("*.png"))) == 1797


def test_eval_metrics_have_the_expected_keys(project) -> None:
    scores = json.loads((project / "metrics/eval.json").read_text())
    assert set(scores) == {"val", "test"}
    for split in scores.values():
        assert set(split) == {"accuracy", "loss", "precision_macro", "recall_macro", "f1_macro"}
        assert 0.5 < split["accuracy"] <= 1.0  # 2 epochs of a tiny MLP still learn digits
    per_class = json.loads((project / "metrics/per_class.json").read_text())
    assert set(per_class["test"]) == {str(d) for d in range(10)}
    assert set(per_class["test"]["3"]) == {"precision", "recall", "f1", "support"}
    history = pd.read_csv(project / "plots/train/history.csv")
    assert history.columns.tolist() == ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    assert history["epoch"].tolist() == [1, 2]
    steps = pd.read_csv(project / "plots/train/steps.csv")
    assert steps.columns.tolist() == ["step", "epoch", "loss", "lr"] and steps["step"].is_monotonic_increasing
    train = json.loads((project / "metrics/train.json").read_text())
    assert set(train) == {"epochs", "best_epoch", "stopped_early", "parameters", "params_per_sample",
                          "train_loss", "train_accuracy"}
    assert 1 <= train["best_epoch"] <= 2 and train["params_per_sample"] == pytest.approx(
        train["parameters"] / len(pd.read_csv(project / "data/augmented/train/index.csv")))


def test_no_val_or_test_image_reaches_training(project) -> None:
    lists = {s: pd.read_csv(project / f"data/split/{s}.csv")["path"] for s in ("train", "val", "test")}
    assert not set(lists["train"]) & set(lists["val"]) and not set(lists["train"]) & set(lists["test"])
    assert not set(lists["val"]) & set(lists["test"])
    augmented = load_array_set(project / "data/augmented/train")
    sources = set(augmented.index["source"])
    assert sources == set(lists["train"])
    assert not sources & (set(lists["val"]) | set(lists["test"]))
    assert set(augmented.index["split"]) == {"train"}
    prepared = load_array_set(project / "data/prepared/train")
    n = len(prepared.labels)
    assert len(augmented.labels) == 2 * n  # the originals and one blur (blur_kernels: [3])
    originals = (augmented.index["augmentation"] == "original").to_numpy()
    np.testing.assert_array_equal(augmented.images[originals], prepared.images)  # byte for byte
    assert augmented.index["source"][originals].tolist() == prepared.index["source"].tolist()
    assert augmented.index["augmentation"].tolist() == ["original", "blur3"] * n
    np.testing.assert_array_equal(augmented.labels, np.repeat(prepared.labels, 2))


def test_lr_change_reruns_train_and_evaluate_only(project, lr_experiment) -> None:
    assert stages_run(lr_experiment) == ["train", "evaluate"]
    for skipped in ("ingest", "split", "prepare", "augment"):
        assert f"Stage '{skipped}' didn't change, skipping" in lr_experiment.stdout


def test_augment_change_reruns_augment_train_evaluate_only(project) -> None:
    result = dvc("exp", "run", "-n", "more-blur", "-S", "augment.blur_kernels=[3,5]", cwd=project)
    assert stages_run(result) == ["augment", "train", "evaluate"]
    augmented = load_array_set(project / "data/augmented/train")
    assert set(augmented.index["augmentation"]) == {"original", "blur3", "blur5"}


def test_a_torchvision_model_is_one_param_away(project) -> None:
    result = dvc("exp", "run", "-n", "shufflenet", "-S", "model.name=shufflenet_v2_x0_5", "-S", "train.epochs=1",
                 cwd=project)
    assert stages_run(result) == ["train", "evaluate"]
    assert "train: shufflenet_v2_x0_5" in result.stdout
    assert set(json.loads((project / "metrics/eval.json").read_text())) == {"val", "test"}


def test_exp_show_lists_params_and_accuracies(project, lr_experiment) -> None:
    table = dvc("exp", "show", "--csv", cwd=project).stdout
    header, *rows = csv.reader(table.strip().splitlines())
    for column in ("test.accuracy", "val.accuracy", "val.f1_macro", "train.lr", "model.name", "best_epoch"):
        assert column in header, column
    lr_small = next(row for row in rows if row[0] == "lr-small")
    assert lr_small[header.index("train.lr")] == "0.01"


def test_plots_diff_renders_both_revisions(project, lr_experiment) -> None:
    result = dvc("plots", "diff", "HEAD", "lr-small", "--json", cwd=project)
    plots = json.loads(result.stdout)["data"]
    for name in ("Loss", "Accuracy", "Confusion matrix (test)"):
        (plot,) = plots[name]
        assert plot["type"] == "vega" and plot["revisions"] == ["HEAD", "lr-small"], name
    out = project / "plots_html"
    dvc("plots", "diff", "HEAD", "lr-small", "-o", str(out), cwd=project)
    html = (out / "index.html").read_text()
    assert "HEAD" in html and "lr-small" in html


def test_metrics_diff_against_the_last_commit(project, lr_experiment) -> None:
    diff = json.loads(dvc("metrics", "diff", "HEAD", "lr-small", "--json", cwd=project).stdout)
    assert "test.accuracy" in diff["metrics/eval.json"]


def test_bad_param_fails_dvc_repro_with_one_clear_line(project) -> None:
    params = project / "params.yaml"
    original = params.read_text()
    try:
        values = read_params(params)
        values["train"]["lerning_rate"] = values["train"].pop("lr")
        dump_params(params, values)
        result = dvc("repro", cwd=project, check=False)
        assert result.returncode != 0
        assert "error: unknown key 'train.lerning_rate' in params.yaml; did you mean 'train.lr'?" in result.stderr
    finally:
        params.write_text(original)
