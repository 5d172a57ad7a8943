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
