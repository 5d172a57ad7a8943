"""The module layout is the rerun policy: a DVC dependency is a whole file, so editing the file that
defines a function must mark exactly the stages that run it, and no other.

The table below is the policy, one row per function (issue 19's table, and more). The unit test
reads the stages a file change marks from dvc.yaml (tests/test_dvc_yaml.py holds dvc.yaml to each
stage's imports); the integration test asks the real `dvc status` for two rows.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.helpers import ROOT

# "module:function" -> the pipeline stages that run it (lr_find, sweep, predict and report are tools)
RUN_BY = {
    "stages.split:stratified_split": {"split"},
    "stages.split:merge_and_drop": {"split"},
    "stages.lib.listing:list_class_folder": {"ingest", "split"},
    "stages.lib.decode:decode_image": {"ingest", "prepare", "augment"},  # augment: its preview's raw files
    "stages.lib.decode:near_duplicates": {"ingest", "prepare", "augment"},  # one file with decode_image
    "stages.lib.transforms:format_image": {"prepare"},
    "stages.lib.augmentations:augment_block": {"augment"},
    "stages.augment:plot_class_counts": {"augment"},
    "stages.lib.figures:plot_image_grid": {"augment", "evaluate"},
    "stages.lib.scores:summary_block": {"evaluate"},
    "stages.lib.scores:classification_report": {"evaluate"},
    "stages.lib.charts:plot_confusion": {"evaluate"},
    "stages.lib.health:check_collapse": {"evaluate"},
    "stages.lib.optim:make_optimizer": {"train"},
    "stages.lib.loop:fit": {"train"},
    "stages.lib.online:online_augment": {"train"},
    "stages.lib.policies:apply_policy": {"train"},  # lr_find too, a tool
    "stages.lib.inference:predict_logits": {"train", "evaluate"},  # train: its val scores each epoch
    "stages.lr_find:lr_range_test": set(),
    "stages.lib.io:staged_outputs": {"ingest", "split", "prepare", "augment", "train", "evaluate"},
    "stages.export:export_checkpoint": set(),  # a tool, run on the checkpoint one serves
    "stages.lib.checkpoint:Checkpoint": {"train", "evaluate"},
}

STAGES = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


def defining_file(spec: str) -> str:
    module, name = spec.split(":")
    function = inspect.unwrap(getattr(importlib.import_module(module), name))  # through @torch.no_grad() and the like
    return Path(inspect.getsourcefile(function)).relative_to(ROOT).as_posix()


def marked_by(file: str) -> set[str]:
    """The stages whose dvc.yaml deps hold `file`: what `dvc status` marks after an edit of it."""
    return {name for name, stage in STAGES.items()
            if file in [next(iter(d)) if isinstance(d, dict) else d for d in stage["deps"]]}


@pytest.mark.parametrize("spec", list(RUN_BY))
def test_editing_a_function_marks_only_the_stages_that_run_it(spec: str) -> None:
    assert marked_by(defining_file(spec)) == RUN_BY[spec], defining_file(spec)


def test_no_stage_module_imports_another() -> None:
    """A stage's module is its own dependency only: lr_find importing stages.train made every edit of
    train's code an edit of lr_find's, and the reverse; evaluate importing the training loop reran it
    for every loop change."""
    import ast
    for path in (ROOT / "stages").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages."):
                assert node.module.startswith("stages.lib"), f"{path.name} imports {node.module}"
    assert "stages/lib/loop.py" not in {next(iter(d)) if isinstance(d, dict) else d for d in STAGES["evaluate"]["deps"]}


def test_every_listed_suffix_is_a_format_the_decoder_reads() -> None:
    """listing.py (ingest, split) and decode.py (ingest, prepare, augment, predict) are cut apart: the
    suffixes listed as images must stay the formats decoded."""
    import cv2
    import numpy as np
    from stages.lib.decode import FORMATS, decode_image
    from stages.lib.listing import FORMATS as LISTED, IMAGE_SUFFIXES
    assert FORMATS == LISTED
    image = np.random.default_rng(0).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    for suffix in IMAGE_SUFFIXES:
        ok, encoded = cv2.imencode(suffix, image)
        assert ok and decode_image(encoded.tobytes(), f"x{suffix}").shape == (6, 9, 3), suffix
