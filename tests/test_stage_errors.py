"""Bad input ends a stage with one line naming the file or key, exit 1, and no output written.

Each stage runs as users' DVC runs it: `python -m stages.<name>` in a copy of the project.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier.data.artifacts import load_array_set
from tests.helpers import copy_project, make_image_folder, run_stage

pytestmark = pytest.mark.slow


def assert_fails_cleanly(result, message: str, project: Path, absent: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not (project / absent).exists()
    assert not list((project / absent).parent.glob(".*.tmp"))  # no half-written temporary either


@pytest.mark.parametrize("overrides,message", [
    ({"train": {"lerning_rate": 0.1}}, "unknown key 'train.lerning_rate' in params.yaml; did you mean 'train.lr'?"),
    ({"train": {"lr": -0.1}}, "The 'train.lr' parameter must be a float > 0 and <= 100. Got -0.1 instead."),
    ({"split": {"train": 0.5, "val": 0.1, "test": 0.1}}, "parameters must sum to 1. Got 0.5 + 0.1 + 0.1 = 0.7"),
    ({"augment": {"blur_kernels": [3, 4]}}, "'augment.blur_kernels' parameter must be a list of distinct odd"),
    ({"augment": {"blur_kernels": [-3]}}, "Got [-3] instead."),
])
def test_bad_params_stop_the_params_stage(tmp_path, overrides, message) -> None:
    """The params stage, first in dvc.yaml, checks every section; a stage checks only its own."""
    project = copy_project(tmp_path, overrides)
    assert_fails_cleanly(run_stage("stages.params", project, check=False), message, project, "data/params.ok")


def test_missing_data_folder(tmp_path) -> None:
    project = copy_project(tmp_path / "p", {"data": {"source": str(tmp_path / "nowhere")}})
    result = run_stage("ingest", project, check=False)
    assert_fails_cleanly(result, f"data folder {tmp_path / 'nowhere'} not found (data.source", project, "data/raw")


@pytest.mark.parametrize("damage,message", [
    (lambda root: (root / "b" / "img_001.png").write_bytes(b""), "img_001.png: empty (zero-byte) image file"),
    (lambda root: (root / "b" / "img_001.png").write_bytes(b"\x89PNG garbage"), "img_001.png: not a readable image"),
    (lambda root: [p.unlink() for p in (root / "b").iterdir()], "class folder"),
])
def test_bad_image_folder(tmp_path, damage, message) -> None:
    source = make_image_folder(tmp_path / "photos", {"a": 4, "b": 4})
    damage(source)
    project = copy_project(tmp_path / "p", {"data": {"source": str(source)}})
    assert_fails_cleanly(run_stage("ingest", project, check=False), message, project, "data/raw")


def test_single_class_folder(tmp_path) -> None:
    source = make_image_folder(tmp_path / "photos", {"only": 5})
    project = copy_project(tmp_path / "p", {"data": {"source": str(source)}})
    assert_fails_cleanly(run_stage("ingest", project, check=False),
                         "must hold at least two class subfolders, found 1", project, "data/raw")


def test_class_too_small_to_split(tmp_path) -> None:
    source = make_image_folder(tmp_path / "photos", {"a": 6, "b": 2})
    project = copy_project(tmp_path / "p", {"data": {"source": str(source)}})
    run_stage("ingest", project)
    assert_fails_cleanly(run_stage("split", project, check=False), "class 'b' has 2 image(s)", project, "data/split")


def test_user_folder_of_colour_jpegs_goes_through(tmp_path) -> None:
    """A folder of non-square colour JPEGs, one param away from the default, with skipped junk."""
    source = make_image_folder(tmp_path / "photos", {"cat": 8, "dog": 9, "owl": 7}, size=(30, 50), suffix=".jpg")
    (source / "cat" / "README.txt").write_text("not an image")
    project = copy_project(tmp_path / "p", {"data": {"source": str(source)},
                                            "prepare": {"grayscale": False, "image_size": [24, 20]}})
    assert "skipped 1 hidden, non-image, symlinked or special file(s)" in run_stage("ingest", project).stdout
    run_stage("split", project)
    run_stage("prepare", project)
    train = load_array_set(project / "data/prepared/train")
    assert train.images.shape[1:] == (24, 20, 3) and train.images.dtype == np.uint8
    assert sorted(set(train.labels.tolist())) == [0, 1, 2]


def test_given_val_split_with_a_class_train_lacks(tmp_path) -> None:
    make_image_folder(tmp_path / "photos" / "train", {"a": 6, "b": 6})
    make_image_folder(tmp_path / "photos" / "val", {"a": 2, "b": 2, "zebra": 2}, seed=1)  # not train's pixels
    project = copy_project(tmp_path / "p", {"data": {"source": str(tmp_path / "photos")}})
    run_stage("ingest", project)
    assert_fails_cleanly(run_stage("split", project, check=False),
                         "data/raw/val: class(es) zebra have no train images", project, "data/split")


def test_unknown_class_in_split_merge(tmp_path) -> None:
    source = make_image_folder(tmp_path / "photos", {"a": 6, "b": 6})
    project = copy_project(tmp_path / "p", {"data": {"source": str(source)}, "split": {"merge": {"c": "a"}}})
    run_stage("ingest", project)
    assert_fails_cleanly(run_stage("split", project, check=False),
                         "The 'split.merge' parameter names unknown class(es) c; classes: a, b", project, "data/split")


def test_a_data_parallel_run_reports_a_workers_error_once(tmp_path) -> None:
    """Both torchrun workers hit the same error: the user reads it once, as from one process."""
    source = make_image_folder(tmp_path / "photos", {"a": 12, "b": 12, "c": 12})
    project = copy_project(tmp_path / "p", {"data": {"source": str(source)},
                                            "train": {"processes": 2, "device": "cpu", "lr": 100.0, "batch_size": 8}})
    for stage in ("ingest", "split", "prepare", "augment"):
        run_stage(stage, project)
    result = run_stage("train", project, check=False)
    assert "train: starting 2 processes with torchrun" in result.stdout
    assert_fails_cleanly(result, "lower train.lr (now 100) or check the data; no model was written", project,
                         "models/model.pt")
