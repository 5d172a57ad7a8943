"""dvc.yaml says exactly what each stage reads and writes, so DVC reruns exactly what a change touches.

A param a stage reads but does not declare gives stale results that DVC never reruns; a code
module it imports but does not list as a dep does the same. Deps and params are generated from the
code (tools/dvc_yaml.py); these tests check that dvc.yaml is up to date with it, that the generator
finds what it must, and the hand-written rest (outs, plots) against each module's OUTS.
"""
from __future__ import annotations

import importlib

import pytest
from ruamel.yaml import YAML

from classifier.params.whole_file import SECTIONS, section_keys
from tests.helpers import ROOT
from tools import dvc_yaml

TEXT = (ROOT / "dvc.yaml").read_text()
DVC_YAML = YAML(typ="safe").load(TEXT)
STAGES = DVC_YAML["stages"]


def entries(items: list) -> list[str]:
    return [next(iter(item)) if isinstance(item, dict) else item for item in items or []]


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_dvc_yaml_is_up_to_date_with_the_code() -> None:
    assert dvc_yaml.render(TEXT) == TEXT, "dvc.yaml's deps or params differ from the code: run `make generated`"


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_missing_code_dep_is_put_back_and_comments_stay() -> None:
    dropped = TEXT.replace("      - classifier/augment/policies.py\n", "", 1)
    assert dropped != TEXT
    assert dvc_yaml.render(dropped) == TEXT
    assert "      - models/model.pt      # with the training record" in dvc_yaml.render(TEXT)


def test_code_deps_follow_imports_relative_lazy_and_packages() -> None:
    deps = dvc_yaml.code_deps("stages.train")
    assert deps[0] == "stages/train.py"
    # through classifier/training/loop.py -> .augment_online -> .augment_policies (relative imports)
    assert {"classifier/augment/policies.py", "classifier/__init__.py", "classifier/params/__init__.py",
            "stages/__init__.py"} <= set(deps)
    assert "classifier/params/evaluate.py" not in deps and "classifier/evaluation/health.py" not in deps
    # tools.tune imports classifier.models.registry inside a function (check_combination): a dependency all the same
    assert "classifier/models/registry.py" in dvc_yaml.code_deps("tools.tune")


def test_a_stage_depends_only_on_the_params_modules_of_the_sections_it_reads() -> None:
    ingest = set(dvc_yaml.code_deps("stages.ingest"))
    assert {p for p in ingest if p.startswith("classifier/params/")} == {
        "classifier/params/__init__.py", "classifier/params/checks.py", "classifier/params/data.py"}
    assert not {"classifier/training/devices.py", "classifier/training/distributed.py"} & ingest


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_outs_are_its_modules_outs(name: str) -> None:
    stage = STAGES[name]
    module_name = dvc_yaml.stage_module(stage["cmd"])
    module = importlib.import_module(module_name)
    outs = entries(stage.get("outs")) + entries(stage.get("metrics")) + entries(stage.get("plots"))
    assert sorted(outs) == sorted(p.as_posix() for p in module.OUTS)


def test_every_param_is_read_by_some_stage() -> None:
    declared = {entry for stage in STAGES.values() for entry in stage.get("params", [])}
    every_key = {f"{section}.{key}" for section in SECTIONS for key in section_keys(section)}
    covered = {key for key in every_key if key in declared or key.split(".")[0] in declared}
    assert covered == every_key and all(entry.split(".")[0] in SECTIONS for entry in declared)


def test_the_params_stage_runs_first_and_every_stage_follows_it() -> None:
    assert list(STAGES) == ["params", "ingest", "split", "prepare", "augment", "train", "audit", "evaluate"]
    assert STAGES["params"]["cmd"] == "python -m stages.params"
    assert "params.yaml" in STAGES["params"]["deps"] and "data/params.ok" in STAGES["ingest"]["deps"]
    assert all(STAGES[name]["cmd"] == f"python -m stages.{name}" for name in list(STAGES)[1:])


def test_top_level_plots_point_at_stage_outputs() -> None:
    outputs = [o for stage in STAGES.values() for o in entries(stage.get("outs"))]
    for plot in DVC_YAML["plots"]:
        if isinstance(plot, str):
            files = [plot]
        else:
            (spec,) = plot.values()
            files = list(spec["y"])
        for file in files:
            assert any(file == o or file.startswith(o + "/") for o in outputs), file


def test_a_copy_of_the_project_holds_every_file_a_stage_reads_that_no_stage_writes() -> None:
    """The tests' projects and the benchmarks' scratch repos copy PROJECT_FILES: a new dependency
    (data/labels.csv was one) left out of it fails their `dvc repro` with a missing file."""
    from benchmarks import PROJECT_FILES
    written = {out for stage in STAGES.values() for out in entries(stage.get("outs"))}
    read = {dep for stage in STAGES.values() for dep in entries(stage.get("deps")) if "${" not in dep}
    inputs = {dep for dep in read if not any(dep == out or dep.startswith(f"{out}/") for out in written)}
    missing = sorted(dep for dep in inputs if not any(dep == f or dep.startswith(f"{f}/") for f in PROJECT_FILES))
    assert inputs and not missing, missing


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_dvc_parses_dvc_yaml_and_the_lock_with_ruamels_c_parser() -> None:
    """requirements.txt pins ruamel.yaml.clib, which DVC does not ask for: without it each of the dozens
    of parses of dvc.lock a command makes is pure Python (a second an experiment, benchmarks.dvc_yaml)."""
    from dvc.utils.serialize._yaml import parse_yaml
    from ruamel.yaml import YAML
    from ruamel.yaml.main import CParser
    assert CParser is not None and YAML(typ="safe").Parser is CParser
    lock = (ROOT / "dvc.lock").read_text()
    assert parse_yaml(lock, "dvc.lock") == YAML(typ="safe", pure=True).load(lock)
