"""Keeps dvc.yaml's generated parts in step with the code: each stage's code deps, data deps and params.

    python -m tools.dvc_yaml           # rewrite dvc.yaml (make generated)
    python -m tools.dvc_yaml --check   # exit 1, naming the stage, when dvc.yaml is out of date (a test runs it)

DVC reruns a stage when a file it depends on changes, and only those: a module a stage imports but
dvc.yaml does not list gives stale results. So a stage's code deps are every project file its
module imports, directly or through others (packages' __init__.py too, lazy imports inside functions
too), found by reading the imports; its data deps are the module's DEPS; its params are what its
PARAMS dataclasses read (a whole section, or single keys of a shared one). Everything else in
dvc.yaml (outs, comments, plots) is written by hand and checked by tests/test_dvc_yaml.py.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

from ruamel.yaml import YAML

from classifier.runtime.code_deps import ROOT, code_deps, module_file
from classifier.runtime.errors import PipelineError, run_stage

DVC_YAML = ROOT / "dvc.yaml"
ITEM = re.compile(r"^      - (\S+)(\s+#.*)?$")


def stage_module(cmd: str) -> str:
    match = re.fullmatch(r"python -m ([\w.]+)", cmd.strip())
    if not match:
        raise ValueError(f"dvc.yaml: a stage's cmd must be `python -m <module>`, got {cmd!r}")
    return match[1]


def generated(module: str) -> tuple[list[str], list[str] | None]:
    """(deps, params) of the stage that runs `module`: params None when the module declares none."""
    from classifier.params.checks import dvc_params
    file = module_file(module)
    is_package = file is not None and file.name == "__init__.py"
    loaded = importlib.import_module(f"{module}.__main__" if is_package else module)
    deps = code_deps(module) + [Path(d).as_posix() for d in getattr(loaded, "DEPS", ())]
    params = dvc_params(loaded.PARAMS) if hasattr(loaded, "PARAMS") else None
    return deps, params


def _replace_list(lines: list[str], key: str, values: list[str]) -> list[str]:
    """The stage block `lines` with the list under `    <key>:` replaced by `values`, keeping the
    trailing comment of any item that stays."""
    start = next(i for i, line in enumerate(lines) if line.split("#")[0].rstrip() == f"    {key}:")
    end = start + 1
    comments: dict[str, str] = {}
    while end < len(lines) and (ITEM.match(lines[end]) or lines[end].strip().startswith("#")):
        match = ITEM.match(lines[end])
        if match and match[2]:
            comments[match[1]] = match[2]
        end += 1
    items = [f"      - {value}{comments.get(value, '')}" for value in values]
    return lines[:start + 1] + items + lines[end:]


def render(text: str) -> str:
    """dvc.yaml's text with every stage's deps and params regenerated."""
    stages = YAML(typ="safe").load(text)["stages"]
    lines = text.split("\n")
    for name, stage in stages.items():
        deps, params = generated(stage_module(stage["cmd"]))
        start = next(i for i, line in enumerate(lines) if line.split("#")[0].rstrip() == f"  {name}:")
        end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith("    ")),
                   len(lines))
        block = _replace_list(lines[start:end], "deps", deps)
        if params is not None:
            block = _replace_list(block, "params", params)
        lines[start:end] = block
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether dvc.yaml is up to date")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    text = DVC_YAML.read_text()
    new = render(text)
    if args.check:
        if new != text:
            raise PipelineError("dvc.yaml is out of date with the code: run `make generated`")
        return
    if new != text:
        DVC_YAML.write_text(new)
        print("dvc.yaml: deps and params regenerated")


if __name__ == "__main__":
    run_stage(main)
