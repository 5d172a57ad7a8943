"""Every `python -m stages.<module> ...` command README.md shows runs as written: its arguments
parse (a module without a parser takes none)."""
from __future__ import annotations

import importlib
import re
import shlex

import pytest

from tests.helpers import ROOT

# The command up to a comment, a backtick or a shell operator.
COMMAND = re.compile(r"python -m stages\.(\w+)([^`#&|;\n]*)")
COMMANDS = sorted(set(COMMAND.findall((ROOT / "README.md").read_text())))


def test_the_readme_shows_the_commands() -> None:
    assert {"report", "predict"} <= {module for module, _ in COMMANDS}


@pytest.mark.parametrize("module,args", COMMANDS, ids=[f"{m}{a}".strip() for m, a in COMMANDS])
def test_readme_command_parses(module: str, args: str) -> None:
    stage = importlib.import_module(f"stages.{module}")
    argv = shlex.split(args)
    if not hasattr(stage, "build_parser"):
        assert argv == [], f"stages.{module} takes no arguments"
        return
    try:
        stage.build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`python -m stages.{module}{args}` from README.md does not parse (exit {exc.code})")


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
    table = (ROOT / "README.md").read_text().split("## Bad input", 1)[1]
    (row,) = [line for line in table.splitlines() if line.startswith(f"| {fault} |")]
    assert fix in row


def test_make_repro_shows_the_install_as_it_goes() -> None:
    """The first `make repro` installs for minutes: pip's own lines show it moving (no --quiet)."""
    makefile = (ROOT / "Makefile").read_text()
    (install,) = [line for line in makefile.splitlines() if "pip install" in line]
    assert "-r requirements.txt" in install and not re.search(r"\s(--quiet|-q+)\b", install), install
    assert "a few minutes the first time" in makefile
