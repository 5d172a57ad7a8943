"""python -m tools.export --format onnx: onnxruntime gives the checkpoint's logits (within 1e-4, the
same top class) for the default model, a torchvision model (shufflenet_v2_x0_5, the zoo's smallest)
and efficientnet_lite0, at batch sizes 1 and 17 (the batch is dynamic), with the class names and
preprocessing in the model's metadata."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from classifier.models.checkpoint import Checkpoint
from classifier.models.registry import InputShape, build_model
from classifier.params.whole_file import load_params
from classifier.data.preprocessing import Preprocessing
from tests.helpers import ROOT
from tools import export

pytestmark = pytest.mark.slow  # a few seconds of export a model

PARAMS = load_params("model", "prepare", path=ROOT / "params.yaml")


def checkpoint_of(name: str, grey: bool, side: int) -> Checkpoint:
    torch.manual_seed(0)
    channels = 1 if grey else 3
    preprocessing = Preprocessing(dataclasses.replace(PARAMS.prepare, image_size=(side, side), grayscale=grey),
                                  (0.45,) * channels, (0.22,) * channels)
    params = dataclasses.replace(PARAMS.model, name=name)
    model = build_model(params, InputShape(channels, side, side, 5), with_weights=False).eval()
    for module in model.modules():  # batch-norm statistics of a trained model, not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return Checkpoint(model.state_dict(), params, ["ant", "bee", "cat", "dog", "eel"], preprocessing, 3, "cpu", False)


@pytest.mark.parametrize("name,grey,side", [(PARAMS.model.name, True, 32), ("shufflenet_v2_x0_5", False, 64),
                                            ("efficientnet_lite0", False, 64)])
def test_onnxruntime_gives_the_checkpoints_logits_at_any_batch_size(tmp_path, name, grey, side) -> None:
    checkpoint = checkpoint_of(name, grey, side)
    export.export_onnx(checkpoint, tmp_path / "model.onnx")
    session, classes, preprocessing = export.load_onnx(tmp_path / "model.onnx")
    assert classes == checkpoint.classes and preprocessing == checkpoint.preprocessing.to_dict()
    served = export.Served(checkpoint.build_model(torch.device("cpu")), checkpoint.preprocessing.normalizer())
    rng = np.random.default_rng(1)
    for batch in (1, 17):
        images = rng.integers(0, 256, (batch, *checkpoint.preprocessing.input_shape), dtype=np.uint8)
        with torch.no_grad():
            expected = served(torch.from_numpy(images)).numpy()
        logits = session.run(None, {"images": images})[0]
        assert logits.shape == (batch, 5) and np.abs(logits - expected).max() < 1e-4
        assert (logits.argmax(1) == expected.argmax(1)).all()


def test_the_command_writes_onnx_beside_the_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    checkpoint_of(PARAMS.model.name, True, 32).save(tmp_path / "models/model.pt")
    export.main(["--format", "onnx"])
    assert capsys.readouterr().out.startswith("export: models/model.onnx (onnx; ")
    assert export.load_onnx(tmp_path / "models/model.onnx")[1] == ["ant", "bee", "cat", "dog", "eel"]


def test_the_exported_files_are_git_ignored_as_tool_outputs() -> None:
    """tools.export writes models/model.pt2 or models/model.onnx in the workspace: neither shows as untracked."""
    import subprocess
    from tests.helpers import ROOT
    ignored = subprocess.run(["git", "check-ignore", "models/model.pt2", "models/model.onnx"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert ignored == ["models/model.pt2", "models/model.onnx"]
