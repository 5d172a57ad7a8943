"""`dvc exp run -S` edits params.yaml in place, run after run: lists and mappings set, emptied and
set again must leave a file that loads, with the values asked for and its comments."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from classifier.params.whole_file import SECTIONS, load_params
from tests.helpers import ROOT, copy_project, dvc, git, run

pytestmark = pytest.mark.integration

EDITS = [  # (the -S arguments of one experiment, what the params must then say)
    (["augment.blur_kernels=[]", "model.hidden=[64]", "+split.merge.cat=animal", "split.drop=[dog]"],
     {"augment.blur_kernels": (), "model.hidden": (64,), "split.merge": (("cat", "animal"),), "split.drop": ("dog",)}),
    (["split.drop=[]", "model.head=[32,16]", "prepare.image_size=[20,24]"],
     {"split.drop": (), "model.head": (32, 16), "prepare.image_size": (20, 24)}),
    (["model.head=[]", "model.pool_after=[]", "train.class_weights=[1,2]"],
     {"model.head": (), "model.pool_after": (), "train.class_weights": (1.0, 2.0)}),
    (["augment.blur_kernels=[3]", "train.class_weights=none", "prepare.image_size=16"],
     {"augment.blur_kernels": (3,), "train.class_weights": "none", "prepare.image_size": (16, 16)}),
]


def comments(text: str) -> list[str]:
    return [line.split("#", 1)[1].strip() for line in text.splitlines() if "#" in line]


def params_check_project(root: Path) -> Path:
    """The project's code and shipped params.yaml in a git + DVC repo whose one stage is the params check
    (it checks every section: it fails if an edit left the file broken)."""
    copy_project(root)
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())  # the layout under test, as shipped
    (root / "dvc.yaml").write_text(f"stages:\n  params:\n    cmd: {Path(sys.executable).name} -m stages.params\n"
                                   f"    params: [{', '.join(SECTIONS)}]\n    outs: [data/params.ok]\n")
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "t@e.st"], ["git", "config", "user.name", "t"]):
        run(command, root)
    dvc("init", "-q", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "project", cwd=root)
    return root


def test_repeated_exp_run_edits_keep_params_yaml_intact(tmp_path) -> None:
    root = params_check_project(tmp_path / "project")
    original_comments = comments((root / "params.yaml").read_text())
    for arguments, expected in EDITS:
        dvc("exp", "run", *[a for argument in arguments for a in ("-S", argument)], cwd=root)
        params = load_params(*SECTIONS, path=root / "params.yaml")
        for key, value in expected.items():
            section, name = key.split(".")
            assert getattr(getattr(params, section), name) == value, (arguments, key)
    assert comments((root / "params.yaml").read_text()) == original_comments


def test_no_comment_sits_beside_or_below_a_list_or_mapping() -> None:
    """The layout the test above proves: a comment there is attached to the list and lost, or mangled."""
    lines = (ROOT / "params.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s+\w+: [\[{]", line):
            assert "#" not in line, f"params.yaml:{number + 1}: comment beside a list or mapping"
            following = lines[number + 1] if number + 1 < len(lines) else ""
            assert not following.strip().startswith("#"), f"params.yaml:{number + 2}: comment below a list"


def test_a_typo_in_set_param_is_refused_by_dvc_then_named_by_the_params_check(tmp_path) -> None:
    """What docs/bad-input.md says a typo in `-S` gets: DVC refuses it before anything runs (no project
    code runs before DVC applies -S), params.yaml untouched; its advice, `+train.lrr`, writes the key,
    and the params check names it with the key meant, in one line, and the way back."""
    root = params_check_project(tmp_path / "project")
    shipped = (root / "params.yaml").read_bytes()
    refused = dvc("exp", "run", "-S", "train.lrr=0.1", cwd=root, check=False)
    assert refused.returncode != 0 and "Could not override 'train.lrr'" in refused.stderr
    assert "+train.lrr=0.1" in refused.stderr and (root / "params.yaml").read_bytes() == shipped
    followed = dvc("exp", "run", "-S", "+train.lrr=0.1", cwd=root, check=False)
    errors = [line for line in followed.stdout.splitlines() + followed.stderr.splitlines() if line.startswith("error:")]
    assert followed.returncode != 0 and len(errors) == 1, followed.stdout + followed.stderr
    assert errors[0].startswith("error: unknown key 'train.lrr' in params.yaml; did you mean 'train.lr'?")
    assert "`make restore`" in errors[0]
