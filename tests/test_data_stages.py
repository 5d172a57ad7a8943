"""The data stages on every input mode (each stage's main(), in this process): the split is honoured,
nothing leaks from val or test into training, and val/test arrays are exactly prepare's output."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from classifier.data.artifacts import load_array_set
from classifier.data.image_files import decode_image
from classifier.data.image_format import format_image
from classifier.params.checks import parse_section
from classifier.params.prepare import PrepareParams
from classifier.data.shards import RawImages
from tests.helpers import assert_picture, copy_project, make_image_folder, read_params, run_stage_in_process

pytestmark = pytest.mark.slow
DATA_STAGES = ("ingest", "split", "prepare", "augment")
CLASSES = {"cat": 12, "dog": 15, "owl": 10}


def flat(root: Path) -> Path:
    return make_image_folder(root / "photos", CLASSES, size=(24, 36))


def presplit(*splits: str):
    def make(root: Path) -> Path:
        for k, split in enumerate(splits):
            make_image_folder(root / "photos" / split, CLASSES if split == "train" else {"cat": 3, "dog": 3, "owl": 3},
                              size=(30, 20), seed=k)
        return root / "photos"
    return make


MODES = {"digits": None, "class folders": flat, "train/val/test": presplit("train", "val", "test"),
         "train/test": presplit("train", "test"), "train only": presplit("train")}


def run_data_stages(tmp_path: Path, make_source, overrides: dict | None = None) -> Path:
    overrides = {"augment": {"blur_kernels": [3, 5], "hflip": True}, **(overrides or {})}
    if make_source is not None:
        overrides["data"] = {"source": str(make_source(tmp_path))}
    project = copy_project(tmp_path / "project", overrides)
    for stage in DATA_STAGES:
        run_stage_in_process(stage, project)
    return project


def split_lists(project: Path) -> dict[str, pd.DataFrame]:
    return {s: pd.read_csv(project / f"data/split/{s}.csv", dtype=str) for s in ("train", "val", "test")}


@pytest.mark.parametrize("mode", list(MODES))
def test_no_leak_and_val_test_are_prepare_output(tmp_path, mode) -> None:
    project = run_data_stages(tmp_path, MODES[mode])
    lists = split_lists(project)
    seen = [set(df["path"]) for df in lists.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    classes = json.loads((project / "data/split/classes.json").read_text())
    for df in lists.values():
        assert set(df["label"]) == set(classes)  # every split has every class

    augmented = load_array_set(project / "data/augmented/train")
    assert set(augmented.index["source"]) == seen[0]
    assert not set(augmented.index["source"]) & (seen[1] | seen[2])
    assert len(augmented.labels) == len(lists["train"]) * 3 * 2  # (1 + 2 blurs) × (1 + hflip)

    params = parse_section(PrepareParams, read_params(project / "params.yaml")["prepare"])
    for split in ("val", "test"):
        arrays = load_array_set(project / f"data/prepared/{split}")
        assert arrays.index["source"].tolist() == lists[split]["path"].tolist()
        raw = RawImages(project / "data/raw")
        expected = np.stack([format_image(decode_image(raw.bytes(p), p), params) for p in lists[split]["path"]])
        assert arrays.images.tobytes() == expected.tobytes()  # byte for byte


@pytest.mark.parametrize("mode,given", [("train/val/test", ["val", "test"]), ("train/test", ["test"]),
                                        ("train only", [])])
def test_a_given_split_is_honoured(tmp_path, mode, given) -> None:
    project = run_data_stages(tmp_path, MODES[mode])
    lists = split_lists(project)
    assert lists["train"]["path"].str.startswith("data/raw/train/").all()
    for split in ("val", "test"):
        prefix = f"data/raw/{split}/" if split in given else "data/raw/train/"  # missing ones carved from train
        assert lists[split]["path"].str.startswith(prefix).all(), split
    if "val" not in given:  # carved stratified: every class, in proportion (split.val of the pool it came from)
        fractions = {"train": 0.7, "val": 0.1, "test": 0.2}  # params.yaml's split fractions
        carved = [s for s in ("val", "test") if s not in given]
        share = fractions["val"] / (fractions["train"] + sum(fractions[s] for s in carved))
        counts = lists["val"]["label"].value_counts()
        for name in CLASSES:
            pool = sum(int((lists[s]["label"] == name).sum()) for s in ("train", *carved))
            assert counts[name] == max(1, round(pool * share)), (name, pool)


def test_missing_val_test_trains_on_all_of_train_and_validates_on_the_given_test(tmp_path) -> None:
    """split.missing_val: test, for a train/ + test/ folder: every train/ image trains (as a plain
    script's would), and val is the given test split (model selection sees it: said in the output)."""
    project = run_data_stages(tmp_path, presplit("train", "test"), {"split": {"missing_val": "test"}})
    lists = split_lists(project)
    assert len(lists["train"]) == sum(CLASSES.values())  # every image of train/
    assert lists["val"].equals(lists["test"]) and lists["test"]["path"].str.startswith("data/raw/test/").all()


def test_given_val_test_makes_a_lone_val_folder_the_test_set_as_the_photo_benchmark_did(tmp_path) -> None:
    """split.given_val: test on train/ + val/ gives the splits of the same folder with val/ renamed
    test/ (how benchmarks.photos measured the README's numbers): val carved from train/ alike, and
    the test set is the given val/, never trained on."""
    as_test = split_lists(run_data_stages(tmp_path / "a", presplit("train", "val"), {"split": {"given_val": "test"}}))
    renamed = split_lists(run_data_stages(tmp_path / "b", presplit("train", "test")))
    for split in ("train", "val"):
        assert as_test[split].equals(renamed[split]), split
    assert as_test["test"]["path"].str.replace("data/raw/val/", "data/raw/test/").tolist() == \
        renamed["test"]["path"].tolist()
    default = split_lists(run_data_stages(tmp_path / "c", presplit("train", "val")))
    assert default["val"]["path"].str.startswith("data/raw/val/").all()  # given_val: val, test carved
    assert default["test"]["path"].str.startswith("data/raw/train/").all()


def test_merge_drop_and_balance_give_the_promised_counts(tmp_path) -> None:
    project = run_data_stages(tmp_path, flat, {"split": {"merge": {"cat": "pet", "dog": "pet"}, "balance": True}})
    classes = json.loads((project / "data/split/classes.json").read_text())
    assert classes == ["owl", "pet"]
    totals = pd.concat(split_lists(project).values())["label"].value_counts()
    assert totals.to_dict() == {"owl": 10, "pet": 10}  # pet (12 + 15) down-sampled to owl's 10
    data = json.loads((project / "metrics/data.json").read_text())
    assert data["classes"] == 2 and sum(data["images"][s] for s in ("train", "val", "test")) == 20

    project = run_data_stages(tmp_path / "drop", flat, {"split": {"drop": ["owl"], "max_per_class": 11}})
    totals = pd.concat(split_lists(project).values())["label"].value_counts()
    assert totals.to_dict() == {"cat": 11, "dog": 11}


def test_data_plots_and_counts(tmp_path) -> None:
    def with_copies(root: Path) -> Path:
        source = flat(root)  # plus a byte-for-byte copy (dropped) and a resized one (kept, a near-duplicate)
        (source / "cat" / "twin.png").write_bytes((source / "cat" / "img_004.png").read_bytes())
        image = cv2.imread(str(source / "dog" / "img_001.png"))
        cv2.imwrite(str(source / "dog" / "zoomed.png"), cv2.resize(image, (72, 48)))
        return source
    project = run_data_stages(tmp_path, with_copies, {"augment": {"blur_kernels": [3], "classes": ["owl"]}})
    data = json.loads((project / "metrics/data.json").read_text())
    assert (data["duplicates"], data["near_duplicates"]) == (1, 1)
    assert sum(data["images"][split] for split in ("train", "val", "test")) == sum(CLASSES.values()) + 1
    counts = pd.read_csv(project / "plots/data/class_counts.csv")
    assert counts.columns.tolist() == ["class", "train", "val", "test", "train_augmented"]
    owl = counts.set_index("class").loc["owl"]
    cat = counts.set_index("class").loc["cat"]
    assert owl["train_augmented"] == 2 * owl["train"] and cat["train_augmented"] == cat["train"]
    for png in ("augment_preview.png", "class_counts.png"):
        assert_picture(project / "plots/data" / png)


def test_skip_corrupt_lists_the_file_and_goes_on(tmp_path, capsys) -> None:
    source = flat(tmp_path)
    (source / "dog" / "img_000.png").write_bytes(b"broken")
    project = copy_project(tmp_path / "project", {"data": {"source": str(source), "skip_corrupt": True}})
    run_stage_in_process("ingest", project)
    assert f"skipped corrupt image {source / 'dog' / 'img_000.png'}" in capsys.readouterr().out
    report = json.loads((project / "data/raw/ingest.json").read_text())
    assert report["corrupt"] == [str(source / "dog" / "img_000.png")] and report["images"] == 36
