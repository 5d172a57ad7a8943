"""dvc.yaml says exactly what each stage reads and writes, so DVC reruns exactly what a change touches.

A param a stage reads but does not declare gives stale results that DVC never reruns; a code
module it imports but does not list as a dep does the same. These tests compare dvc.yaml with
each stage module's PARAMS, DEPS, OUTS and its imports.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from stages.lib.params import SECTIONS, describe
from tests.helpers import ROOT

DVC_YAML = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]


def lib_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """stages/lib/*.py files that `path` imports, directly or through other lib modules."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.module == "stages.lib" or (node.level == 1 and node.module is None):
            names = [alias.name for alias in node.names]
        elif node.module and node.module.startswith("stages.lib."):
            names = [node.module.rsplit(".", 1)[1]]
        elif node.level == 1 and path.parent.name == "lib":
            names = [node.module]
        else:
            continue
        for name in names:
            file = f"stages/lib/{name}.py"
            if file not in seen and (ROOT / file).exists():
                seen.add(file)
                lib_imports(ROOT / file, seen)
    return seen


def entries(items: list) -> list[str]:
    return [next(iter(item)) if isinstance(item, dict) else item for item in items or []]


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_declares_what_its_module_reads_and_writes(name: str) -> None:
    stage = STAGES[name]
    module = importlib.import_module(f"stages.{name}")
    assert stage["cmd"] == f"python -m stages.{name}"
    assert sorted(stage.get("params", [])) == sorted(module.PARAMS)
    deps = entries(stage["deps"])
    code = {d for d in deps if d.startswith("stages/")}
    assert code == {f"stages/{name}.py"} | lib_imports(ROOT / "stages" / f"{name}.py")
    assert sorted(d for d in deps if d not in code) == sorted(Path(p).as_posix() for p in module.DEPS)
    outs = entries(stage.get("outs")) + entries(stage.get("metrics")) + entries(stage.get("plots"))
    assert sorted(outs) == sorted(p.as_posix() for p in module.OUTS)


def test_every_param_is_read_by_some_stage() -> None:
    declared = {entry for stage in STAGES.values() for entry in stage.get("params", [])}
    every_key = {f"{section}.{key}" for section in SECTIONS for key in describe(section)}
    covered = {key for key in every_key if key in declared or key.split(".")[0] in declared}
    assert covered == every_key and all(entry.split(".")[0] in SECTIONS for entry in declared)


def test_pipeline_order_is_ingest_to_evaluate() -> None:
    assert list(STAGES) == ["ingest", "split", "prepare", "augment", "train", "evaluate"]


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


def test_readme_documents_every_stage_and_param() -> None:
    readme = (ROOT / "README.md").read_text()
    for heading in ("## The two commands", "## Everyday DVC commands", "## The pipeline", "## Params", "## Benchmarks"):
        assert heading in readme
    for stage in STAGES:
        assert f"\n| `{stage}` |" in readme, f"README.md's pipeline table has no row for {stage}"
    for section in SECTIONS:
        for key in describe(section):
            assert f"\n| `{section}.{key}` |" in readme, f"README.md's params table has no row for {section}.{key}"
