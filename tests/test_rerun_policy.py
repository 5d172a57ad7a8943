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
    "classifier.data.folder_listing:list_class_folder": {"ingest"},  # split reads data/raw's index
    "classifier.data.shards:read_index": {"ingest", "split", "prepare", "augment"},
    "classifier.data.image_files:decode_image": {"ingest", "prepare", "augment"},  # not split: the index is all it reads
    "classifier.data.duplicates:near_duplicates": {"ingest", "audit"},  # not in image_files.py, which prepare runs too
    "classifier.data.image_format:format_image": {"prepare"},
    "classifier.augment.offline:augment_block": {"augment"},
    "stages.augment:plot_class_counts": {"augment"},
    "classifier.evaluation.plotting:plot_image_grid": {"augment", "evaluate"},
    "classifier.evaluation.scores:summary_block": {"evaluate"},
    "classifier.evaluation.scores:classification_report": {"evaluate"},
    "classifier.evaluation.charts:plot_confusion": {"evaluate"},
    "classifier.evaluation.health:check_collapse": {"evaluate"},
    # audit: its fold models are trained by train's loop
    "classifier.training.optim:make_optimizer": {"train", "audit"},
    "classifier.training.loop:fit": {"train", "audit"},
    "classifier.augment.online:online_augment": {"train", "audit"},
    "classifier.augment.policies:apply_policy": {"train", "audit"},  # lr_find too, a tool
    "classifier.models.inference:predict_logits": {"train", "evaluate", "audit"},  # train: its val scores each epoch
    "tools.lr_find:lr_range_test": set(),
    "classifier.runtime.outputs:staged_outputs": {"params", "ingest", "split", "prepare", "augment", "train", "evaluate",
                                                  "audit"},
    "classifier.params.checks:parse_section": {"params", "ingest", "split", "prepare", "augment", "train", "evaluate",
                                               "audit"},
    # not ingest: a stage reads its own sections; evaluate computes with train.cpu_threads as train did
    "classifier.params.train:TrainParams": {"params", "train", "evaluate", "audit"},
    "classifier.params.online_augment:OnlineAugmentParams": {"params", "train", "audit"},
    "classifier.params.augment:AugmentParams": {"params", "augment"},
    "classifier.params.whole_file:validate": {"params"},
    "classifier.training.distributed:TorchrunWorker": {"train", "audit"},  # the worker handling left errors.py (every stage)
    "tools.export:export_checkpoint": set(),  # a tool, run on the checkpoint one serves
    "classifier.models.checkpoint:Checkpoint": {"train", "evaluate"},
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


def imported(path: Path) -> set[str]:
    import ast
    return {node.module for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and not node.level}


def test_no_stage_module_imports_another_or_a_tool() -> None:
    """A stage's module is its own dependency only: lr_find importing stages.train made every edit of
    train's code an edit of lr_find's, and the reverse; evaluate importing the training loop reran it
    for every loop change."""
    for path in (ROOT / "stages").glob("*.py"):
        for module in imported(path):
            assert not module.startswith(("stages", "tools")), f"stages/{path.name} imports {module}"
    assert "classifier/training/loop.py" not in {next(iter(d)) if isinstance(d, dict) else d for d in STAGES["evaluate"]["deps"]}


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_the_layout_keeps_stages_tools_and_shared_code_apart() -> None:
    """stages/ holds dvc.yaml's stages and nothing else; classifier/ holds sub-packages named for their
    job, no loose module; the tools import no stage; the shared code in classifier/ imports neither."""
    assert {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__"} == set(STAGES)
    assert [p.name for p in (ROOT / "classifier").glob("*.py")] == ["__init__.py"]
    assert {p.name for p in (ROOT / "classifier").iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "augment", "data", "evaluation", "experiments", "models", "params", "runtime", "training"}
    for path in (ROOT / "tools").glob("*.py"):
        assert not {m for m in imported(path) if m.startswith("stages")}, f"tools/{path.name} imports a stage"
    for path in (ROOT / "classifier").rglob("*.py"):
        assert not {m for m in imported(path) if m.startswith(("stages", "tools"))}, path


def test_every_listed_suffix_is_a_format_the_decoder_reads() -> None:
    """folder_listing.py (ingest, split) and image_files.py (ingest, prepare, augment, predict) are cut apart: the
    suffixes listed as images must stay the formats decoded."""
    import cv2
    import numpy as np
    from classifier.data.image_files import FORMATS, decode_image
    from classifier.data.folder_listing import FORMATS as LISTED, IMAGE_SUFFIXES
    assert FORMATS == LISTED
    image = np.random.default_rng(0).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    for suffix in IMAGE_SUFFIXES:
        ok, encoded = cv2.imencode(suffix, image)
        assert ok and decode_image(encoded.tobytes(), f"x{suffix}").shape == (6, 9, 3), suffix


# ------------------------------------------------------------------ rules the docstrings state
def project_modules() -> list[Path]:
    return sorted(p for folder in ("stages", "classifier", "tools") for p in (ROOT / folder).rglob("*.py"))


def test_cv2_is_imported_only_through_its_module() -> None:
    """classifier/data/opencv.py turns OpenCV's CPU-specific code off before anyone uses it: a module
    importing cv2 itself could run before that (stages/ingest.py did)."""
    from classifier.runtime.code_deps import imported_modules
    direct = [p.relative_to(ROOT).as_posix() for p in project_modules() if "cv2" in imported_modules(p)]
    assert direct == ["classifier/data/opencv.py"]


def test_every_command_ends_through_run_stage() -> None:
    """Every module of stages/ and tools/ is a command, and ends `if __name__ == "__main__": run_stage(main)`:
    one-line errors, signals and missing inputs alike (a shared library belongs in classifier/)."""
    import ast
    for path in sorted([*(ROOT / "stages").glob("*.py"), *(ROOT / "tools").glob("*.py")]):
        if path.name == "__init__.py":
            continue
        last = ast.parse(path.read_text()).body[-1]
        assert isinstance(last, ast.If) and ast.unparse(last.test) == "__name__ == '__main__'", path
        assert ast.unparse(last.body[-1]).startswith("run_stage(main"), path


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_no_function_is_over_60_lines_or_8_parameters() -> None:
    """Issue 38's rule for stages/, classifier/ and tools/: a longer function is split, a longer
    parameter list grouped (the loop's FitData, Hooks; a command's parsed args)."""
    import ast
    too_big = []
    for path in project_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                arguments = node.args
                count = len(arguments.posonlyargs) + len(arguments.args) + len(arguments.kwonlyargs)
                count -= bool(arguments.args) and arguments.args[0].arg in ("self", "cls")
                lines = node.end_lineno - node.lineno + 1
                if lines > 60 or count > 8:
                    too_big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines, {count} parameters")
    assert too_big == []


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_no_module_imports_itself_through_others() -> None:
    """Issue 38: no import circle (errors <-> outputs and report <-> study_report were two), lazy imports
    inside functions included: a module's place in the layout says what it may use."""
    from classifier.runtime.code_deps import imported_modules, module_file
    graph = {path: {f for f in map(module_file, imported_modules(path)) if f and f != path and f.name != "__init__.py"}
             for path in project_modules() if path.name != "__init__.py"}
    done: set[Path] = set()

    def visit(path: Path, trail: list[Path]) -> None:
        if path in trail:
            raise AssertionError(" -> ".join(p.relative_to(ROOT).as_posix() for p in trail[trail.index(path):] + [path]))
        if path not in done:
            for imported in graph.get(path, ()):
                visit(imported, trail + [path])
            done.add(path)
    for path in graph:
        visit(path, [])


def test_a_section_module_is_a_dependency_only_of_the_stages_that_read_it() -> None:
    """classifier/params/<section>.py is in a stage's deps exactly when the stage reads that section (or
    those keys): then an edit to one section's rules reruns only those stages. The exceptions, stated in
    classifier/params/__init__.py: prepare.py and model.py are the schemas of the preprocessing contract
    and the checkpoint, dependencies of every stage that loads those. The params stage checks the whole file and depends on every module."""
    from classifier.params.checks import dvc_params
    shared = {"__init__", "checks", "whole_file"}
    reads = {}
    for path in (ROOT / "classifier" / "params").glob("*.py"):
        if path.stem not in shared:
            module = importlib.import_module(f"classifier.params.{path.stem}")
            classes = tuple(v for v in vars(module).values()
                            if inspect.isclass(v) and v.__module__ == module.__name__ and hasattr(v, "SECTION"))
            reads[path.stem] = set(dvc_params(classes))
    for name, stage in STAGES.items():
        deps = {d for d in stage["deps"] if isinstance(d, str)}
        has = {Path(d).stem for d in deps if d.startswith("classifier/params/")} - shared
        if name == "params":
            assert has == set(reads)
            continue
        declared = set(stage.get("params", []))
        expected = {m for m, entries in reads.items()
                    if all(e in declared or e.split(".")[0] in declared for e in entries)}
        if "classifier/data/preprocessing.py" in deps:
            expected.add("prepare")
        if "classifier/models/checkpoint.py" in deps:
            expected.add("model")
        assert has == expected, name
