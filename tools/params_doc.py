"""Writes docs/params.md, the reference of every key of params.yaml, from where the keys are declared.

    python -m tools.params_doc           # rewrite docs/params.md (make generated)
    python -m tools.params_doc --check   # exit 1 when it is out of date (a test runs it)

Each key's meaning is the doc of its field in classifier/params/<section>.py and what it allows is
its check's own words (what the error message says when a value is refused), so the reference and
the validation cannot drift apart. Which stages read a section comes from dvc.yaml.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ruamel.yaml import YAML

from classifier.params.checks import Invalid, section_of
from classifier.params.whole_file import SECTIONS
from classifier.runtime.errors import PipelineError, run_stage

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "params.md"

HEADER = """# Params

Every key of `params.yaml`, generated from `classifier/params/` by `make generated` (a test fails
when this page and the code differ). `dvc repro` checks the whole file first (the `params` stage,
`python -m stages.params`): an unknown key (`unknown key 'train.lerning_rate' in params.yaml;
did you mean 'train.lr'?`) or a bad value (`The 'train.lr' parameter must be a float > 0 and <= 100.
Got -0.1 instead.`) stops it in one line, with exit status 1, before any stage does work. Each stage
then reads only its own sections, so changing a key reruns the stages listed beside its section
and what follows them. `dvc exp run -S section.key=value` sets a key for one experiment.
"""


class _Refused:
    """A value no check accepts: what a check raises for it is its description of what it allows."""


def allowed(field: dataclasses.Field) -> str:
    try:
        field.metadata["check"](_Refused())
    except Invalid as exc:
        return str(exc)
    return "any value"


def readers() -> dict[str, list[str]]:
    """params.yaml entry (a section, or section.key) -> the dvc.yaml stages that declare it."""
    stages = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]
    found: dict[str, list[str]] = {}
    for name, stage in stages.items():
        for entry in stage.get("params", []):
            found.setdefault(entry, []).append(name)
    return found


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    read_by = readers()
    parts = [HEADER]
    for section, classes in SECTIONS.items():
        parts.append(f"\n## {section}\n")
        for cls in classes:
            keys = [f.name for f in dataclasses.fields(cls)]
            stages = read_by.get(section) or sorted({s for k in keys for s in read_by.get(f"{section}.{k}", [])})
            module = f"classifier/params/{sys.modules[cls.__module__].__file__.rsplit('/', 1)[1]}"
            what = f"`{section}.{keys[0]}` to `{section}.{keys[-1]}` are" if len(classes) > 1 else "The section is"
            parts.append(f"\n{what} read by {', '.join(f'`{s}`' for s in stages)}; declared in `{module}`.\n\n"
                         "| key | meaning | allowed |\n|---|---|---|\n")
            assert section_of(cls) == section
            parts.append("".join(f"| `{section}.{f.name}` | {cell(f.metadata['doc'])} | {cell(allowed(f))} |\n"
                                 for f in dataclasses.fields(cls)))
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether docs/params.md is up to date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not DOC.is_file() or DOC.read_text() != text:
            raise PipelineError("docs/params.md is out of date with classifier/params/: run `make generated`")
        return
    DOC.parent.mkdir(exist_ok=True)
    if not DOC.is_file() or DOC.read_text() != text:
        DOC.write_text(text)
        print("docs/params.md regenerated")


if __name__ == "__main__":
    run_stage(main)
