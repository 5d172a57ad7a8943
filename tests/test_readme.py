"""README.md and docs/ hold what they promise: every `python -m stages.<module> ...` or
`python -m tools.<module> ...` command they show parses as written (a module without a parser takes
none), the README stays a short front page that links to pages that exist, and docs/params.md is
the reference generated from where the params are declared."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}
# The command up to a comment, a backtick or a shell operator.
COMMAND = re.compile(r"python -m ((?:stages|tools)\.\w+)([^`#&|;\n]*)")
COMMANDS = sorted(set(COMMAND.findall(README + "".join(DOCS.values()))))


def test_the_readme_shows_the_commands() -> None:
    assert {"tools.report", "tools.predict"} <= {module for module, _ in COMMAND.findall(README)}


def test_the_readme_is_a_front_page_whose_links_exist() -> None:
    lines = README.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines: move the detail to docs/"
    assert not [line for line in lines if len(line) > 200 and not line.startswith("|")]
    for heading in ("## The two commands", "## Everyday DVC commands", "## The pipeline", "## Params",
                    "## Benchmarks", "## Read on"):
        assert heading in README
    links = re.findall(r"\]\((docs/[\w.-]+\.md)(?:#[\w-]+)?\)", README)
    assert {Path(link).name for link in links} == set(DOCS), "every docs/ page is linked from the README, and no other"
    for stage in ("params", "ingest", "split", "prepare", "augment", "train", "evaluate", "audit"):
        assert f"\n| `{stage}` |" in README, f"README.md's pipeline table has no row for {stage}"


def test_docs_params_is_generated_from_the_declarations() -> None:
    from tools import params_doc
    assert DOCS["params.md"] == params_doc.render(), "docs/params.md is out of date: run `make generated`"
    from classifier.params.whole_file import SECTIONS, section_keys
    for section in SECTIONS:
        for key in section_keys(section):
            assert f"\n| `{section}.{key}` |" in DOCS["params.md"]


def test_a_changed_meaning_makes_the_params_reference_stale(monkeypatch) -> None:
    import dataclasses

    from classifier.params.train import TrainParams
    from tools import params_doc
    field = next(f for f in dataclasses.fields(TrainParams) if f.name == "lr")
    monkeypatch.setattr(field, "metadata", {**field.metadata, "doc": "a changed meaning"})
    assert "| `train.lr` | a changed meaning |" in params_doc.render() != DOCS["params.md"]


@pytest.mark.parametrize("module,args", COMMANDS, ids=[f"{m}{a}".strip() for m, a in COMMANDS])
def test_readme_command_parses(module: str, args: str) -> None:
    stage = importlib.import_module(module)
    argv = shlex.split(args)
    if not hasattr(stage, "build_parser"):
        assert argv == [], f"{module} takes no arguments"
        return
    try:
        stage.build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`python -m {module}{args}` from README.md or docs/ does not parse (exit {exc.code})")


@pytest.mark.parametrize("fault, fix", [
    ("a FIFO (named pipe) inside `data.source`", "find <folder> -type p"),
    ("a symlink loop inside `data.source`", "find -L <folder> -type l"),
    ("a file name that is not valid UTF-8 inside `data.source`", "LC_ALL=C find <folder>"),
    ("`data.source: ''`", "set `data.source` to `data/digits` or a folder"),
    ("a stage killed (`kill -9`)", "find data models metrics plots -name '.*.tmp'"),
])
def test_the_bad_input_table_gives_faults_dvc_meets_first_their_fix(fault, fix) -> None:
    """What DVC itself trips on before ingest runs (it hashes data.source), and where a killed run's
    temporaries stay: the project cannot catch these, so the README must say what to do."""
    table = DOCS["bad-input.md"]
    (row,) = [line for line in table.splitlines() if line.startswith(f"| {fault} |")]
    assert fix in row


def test_make_repro_shows_the_install_as_it_goes() -> None:
    """The first `make repro` installs for minutes: pip's own lines show it moving (no --quiet)."""
    makefile = (ROOT / "Makefile").read_text()
    (install,) = [line for line in makefile.splitlines() if "pip install" in line]
    assert "-r requirements.txt" in install and not re.search(r"\s(--quiet|-q+)\b", install), install
    assert "a few minutes the first time" in makefile


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_every_benchmark_imports_and_its_documented_lines_parse() -> None:
    """No test runs the benchmarks (minutes each): at least each module imports what it uses of the
    project (a rename there broke none of the tests), and the lines benchmarks/README.md runs parse."""
    runs = re.findall(r"\$ python -m (benchmarks\.\w+)([^#\n]*)", (ROOT / "benchmarks/README.md").read_text())
    modules = {f"benchmarks.{p.stem}" for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__"}
    assert {module for module, _ in runs} <= modules
    for module in sorted(modules):
        imported = importlib.import_module(module)
        for args in [args for name, args in runs if name == module and hasattr(imported, "build_parser")]:
            imported.build_parser().parse_args(shlex.split(args))
