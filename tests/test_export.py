"""The export stage: models/model.pt2 gives the checkpoint's outputs on the test split, for any batch
size, without this project's model code; its class names and preprocessing travel inside."""
from __future__ import annotations

import pytest
import torch

from stages.export import load_exported
from stages.lib.checkpoint import Checkpoint
from stages.lib.data import DeviceDataset
from stages.lib.inference import predict_logits
from stages.lib.io import load_array_set
from tests.helpers import copy_project, run_stage, run_stage_in_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    # A CNN with batch norm and dropout: layers whose eval-mode behaviour the export must keep.
    project = copy_project(tmp_path_factory.mktemp("export"), {
        "model": {"name": "cnn", "filters": [8, 16], "pool_after": [1, 2], "batch_norm": True, "dropout": 0.3},
        "train": {"epochs": 1}})
    for stage in ("ingest", "split", "prepare", "augment", "train", "export"):
        run_stage_in_process(stage, project)
    return project


def test_the_exported_program_gives_the_checkpoints_logits_on_the_test_split(exported) -> None:
    checkpoint = Checkpoint.load(exported / "models/model.pt")
    program, classes, preprocessing = load_exported(exported / "models/model.pt2")
    test = load_array_set(exported / "data/prepared/test")
    data = DeviceDataset(test.images, test.labels, torch.device("cpu"))
    expected = predict_logits(checkpoint.build_model(torch.device("cpu")), data, checkpoint.preprocessing.normalizer())
    images = torch.from_numpy(test.images.copy()).permute(0, 3, 1, 2).contiguous()  # uint8 N×C×H×W, as prepared
    with torch.no_grad():
        got = program(images)
        one = program(images[:1])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    torch.testing.assert_close(one, expected[:1], rtol=1e-5, atol=1e-5)  # any batch size
    assert classes == checkpoint.classes
    assert preprocessing == checkpoint.preprocessing.to_dict()


def test_export_without_a_model_says_which_stage_makes_it(tmp_path) -> None:
    project = copy_project(tmp_path / "p")
    result = run_stage("export", project, check=False)
    assert result.returncode == 1 and result.stderr.strip().startswith("error: models/model.pt not found")
    assert not (project / "models/model.pt2").exists()
