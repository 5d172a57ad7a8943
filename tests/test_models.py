"""Every registered model builds for 1 and 3 channels at several sizes and takes a training step."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from stages.lib.errors import PipelineError
from stages.lib.models import MODELS, InputShape, build_model, load_checkpoint, register
from stages.lib.params import load_params
from tests.helpers import ROOT

MODEL_PARAMS = load_params("model", path=ROOT / "params.yaml").model


def params_for(name: str, **changes):
    return dataclasses.replace(MODEL_PARAMS, name=name, **changes)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(32, 32), (20, 44)])
def test_model_builds_and_steps(name: str, channels: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(params_for(name), InputShape(channels, *size, num_classes=7))
    x, y = torch.randn(4, channels, *size), torch.tensor([0, 1, 2, 6])
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert model(x).shape == (4, 7)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_mlp_hidden_layers_and_softmax_regression() -> None:
    shape = InputShape(1, 8, 8, 10)
    mlp = build_model(params_for("mlp", hidden=(50, 20), dropout=0.0), shape)
    widths = [m.out_features for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [50, 20, 10]
    regression = build_model(params_for("mlp", hidden=(), dropout=0.0), shape)
    assert [m.in_features for m in regression.modules() if isinstance(m, torch.nn.Linear)] == [64]


def test_unknown_model_lists_the_registry() -> None:
    with pytest.raises(PipelineError, match=r"'model.name' parameter must be one of lenet5, mlp. Got 'resnet9000'"):
        build_model(params_for("resnet9000"), InputShape(1, 32, 32, 10))


def test_lenet5_refuses_tiny_inputs_naming_the_param() -> None:
    with pytest.raises(PipelineError, match="lenet5 needs images of at least 16×16 px, got 8×8: raise prepare.size"):
        build_model(params_for("lenet5"), InputShape(1, 8, 8, 10))


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="'mlp' is registered twice"):
        register("mlp")(lambda params, shape: torch.nn.Identity())


def test_checkpoint_round_trip(tmp_path) -> None:
    params = params_for("lenet5")
    model = build_model(params, InputShape(1, 24, 24, 3)).eval()
    path = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict(),
                "model": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()},
                "classes": ["a", "b", "c"], "input_shape": [1, 24, 24],
                "normalization": {"mean": [0.5], "std": [0.2]}}, path)
    loaded, checkpoint = load_checkpoint(path, torch.device("cpu"))
    x = torch.randn(2, 1, 24, 24)
    assert torch.equal(loaded(x), model(x)) and checkpoint["classes"] == ["a", "b", "c"]
