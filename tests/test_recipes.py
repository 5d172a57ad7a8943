"""The docs' recipes give the same experiment whatever ran before them. `dvc exp run` leaves its
params in params.yaml and the next one starts from them: run in sequence, as a user would, each
recipe's experiment must have the committed params plus its own -S values, nothing left over.

Each recipe runs as written but for two changes: the photo folder is a small one made here, and
`dvc exp run params` runs only the first stage, which checks the whole params file (what a real run
checks first too), so that the sequence takes seconds.
"""
from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.helpers import ROOT, copy_project, dvc, env, git, make_image_folder

pytestmark = pytest.mark.integration

README = (ROOT / "README.md").read_text()
PHOTOS = (ROOT / "docs/your-own-images.md").read_text()
RESET = "git show HEAD:params.yaml > params.yaml"


def code_commands(text: str) -> list[str]:
    """The shell commands of a markdown page's indented code blocks, continuation lines joined."""
    lines, command = [], ""
    for line in text.splitlines():
        if not line.startswith("    "):
            command = ""
            continue
        command += line.strip().removesuffix("\\")
        if not line.endswith("\\"):
            lines.append(command)
            command = ""
    return lines


def photo_recipes() -> list[list[str]]:
    """The small-photo-folder recipes: each starts with the reset line."""
    commands = code_commands(PHOTOS.split("## Small photo folders")[1].split("\n## ")[0])
    recipes = [[c, commands[i + 1]] for i, c in enumerate(commands) if c.startswith(RESET)]
    assert len(recipes) == 2 and all("dvc exp run" in r[1] for r in recipes), commands
    return recipes


def overrides(command: str) -> dict[str, object]:
    words = shlex.split(command, comments=True)
    return {words[i + 1].split("=", 1)[0]: YAML(typ="safe").load(words[i + 1].split("=", 1)[1])
            for i, word in enumerate(words) if word == "-S"}


def expected_params(committed: dict, command: str) -> dict:
    params = copy.deepcopy(committed)
    for key, value in overrides(command).items():
        section, name = key.split(".")
        params[section][name] = value
    return params


def shell(command: str, root: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-c", command], cwd=root, env=env(), capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(f"{command}\n{result.stdout}\n{result.stderr}")
    return result


def as_run_here(command: str, photos: Path) -> str:
    """The recipe's command with the folder made here, running only the params check."""
    command = re.sub(r"/abs/path/[\w-]+", str(photos), command)
    return command.replace("dvc exp run ", "dvc exp run params ", 1)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("recipes") / "project")
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "t@e.st"], ["git", "config", "user.name", "t"]):
        git(*command[1:], cwd=root)
    dvc("init", "-q", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "project", cwd=root)
    return root


def test_the_recipes_in_sequence_each_start_from_the_committed_params(repo, tmp_path) -> None:
    photos = tmp_path / "hymenoptera_data"
    make_image_folder(photos / "train", {"ants": 6, "bees": 6})
    make_image_folder(photos / "val", {"ants": 3, "bees": 3}, seed=1)
    committed = YAML(typ="safe").load(shell("git show HEAD:params.yaml", repo).stdout)
    readme_runs = [c for c in code_commands(README) if c.startswith("dvc exp run -S")]
    assert any(c.startswith("make restore") for c in code_commands(README)), "the README's reset: params and outputs"
    # What a user may have run before: an everyday experiment that leaves train.lr behind.
    shell(as_run_here(readme_runs[0], photos), repo)
    assert YAML(typ="safe").load((repo / "params.yaml").read_text()) != committed
    lite0, scratch = photo_recipes()
    # Without the reset, the from-scratch recipe after the pretrained one keeps model.pretrained: refused.
    shell(as_run_here(lite0[1], photos), repo)
    refused = shell(as_run_here(scratch[1], photos), repo, check=False)
    assert refused.returncode != 0 and "model.pretrained" in refused.stderr
    for recipe in (lite0, scratch):
        shell(recipe[0], repo)
        shell(as_run_here(recipe[1], photos), repo)
        expected = expected_params(committed, as_run_here(recipe[1], photos))
        assert YAML(typ="safe").load((repo / "params.yaml").read_text()) == expected
    # The README's comparison of them all fits 160 columns (dvc exp show --only-changed: over 400).
    report = shell("python -m tools.report", repo).stdout
    assert max(map(len, report.splitlines())) <= 160 and report.count("| done |") >= 5, report
