"""python -m tools.export's refusals; what the program computes is checked on the pipeline's model
(tests/test_pipeline.py: test_the_exported_program_gives_the_checkpoints_logits_on_the_test_split)."""
from __future__ import annotations

import pytest

from tests.helpers import copy_project, run_stage

pytestmark = pytest.mark.slow


def test_export_without_a_model_says_which_stage_makes_it(tmp_path) -> None:
    project = copy_project(tmp_path / "p")
    result = run_stage("tools.export", project, check=False)
    assert result.returncode == 1 and result.stderr.strip().startswith("error: models/model.pt not found")
    assert not (project / "models/model.pt2").exists()
