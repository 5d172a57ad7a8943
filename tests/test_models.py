"""Every architecture builds for 1 and 3 channels at 32 and 64 px and takes a training step;
heads, freezing, pretrained weights and BlurPool do what they promise."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from classifier.models.blurpool import BlurPool2d
from classifier.runtime.errors import PipelineError
from classifier.models.registry import InputShape, MODELS, build_model, count_parameters, head_name, register
from classifier.params.whole_file import load_params
from tests.helpers import ROOT

MODEL_PARAMS = load_params("model", path=ROOT / "params.yaml").model
TORCHVISION = ["resnet18", "resnet50", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "mobilenet_v2", "alexnet"]


def params_for(name: str, **changes):
    return dataclasses.replace(MODEL_PARAMS, name=name, **changes)


def one_step(model: nn.Module, shape: InputShape) -> torch.Tensor:
    x = torch.randn(4, shape.channels, shape.height, shape.width)
    y = torch.arange(4) % shape.num_classes
    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    return model(x)


# Our own models at every combination; torchvision's (slow to build, adapted only at the first conv and
# the head) at one corner each, in turn: every one of them, and both channel counts and sizes, still built.
SHAPES = [(channels, size) for channels in (1, 3) for size in (32, 64)]
CORNERS = [(1, 32), (3, 64)]


@pytest.mark.parametrize("name,channels,size", [(name, channels, size) for name in sorted(MODELS)
                                                for channels, size in SHAPES]
                         + [(name, *CORNERS[k % 2]) for k, name in enumerate(TORCHVISION)]
                         + [("efficientnet_lite0", *corner) for corner in CORNERS])
@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_model_builds_and_steps(name: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    shape = InputShape(channels, size, size, num_classes=7)
    model = build_model(params_for(name), shape)
    before = [p.detach().clone() for p in model.parameters()]
    assert one_step(model, shape).shape == (4, 7)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_non_square_inputs_and_lenet5_dense_size_is_computed() -> None:
    for size in [(20, 44), (64, 48)]:
        model = build_model(params_for("lenet5"), InputShape(3, *size, 5))
        assert model(torch.randn(2, 3, *size)).shape == (2, 5)


def test_mlp_options() -> None:
    shape = InputShape(1, 8, 8, 10)
    mlp = build_model(params_for("mlp", hidden=(50, 20), dropout=0.0, batch_norm=True, activation="tanh"), shape)
    assert [m.out_features for m in mlp.modules() if isinstance(m, nn.Linear)] == [50, 20, 10]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in mlp.modules()) == 2
    assert sum(isinstance(m, nn.Tanh) for m in mlp.modules()) == 2
    regression = build_model(params_for("mlp", hidden=(), dropout=0.0), shape)
    assert [m.in_features for m in regression.modules() if isinstance(m, nn.Linear)] == [64]


def test_cnn_layers_follow_the_params() -> None:
    model = build_model(params_for("cnn", filters=(8, 16, 32), kernel_size=5, pool_after=(1, 3), batch_norm=True),
                        InputShape(1, 32, 32, 4))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32] and convs[0].kernel_size == (5, 5)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert last.in_features == 32 * 8 * 8  # two 2×2 pools: 32 -> 8
    with pytest.raises(PipelineError, match=r"'model.pool_after' parameter must name conv layers 1..3"):
        build_model(params_for("cnn", filters=(8, 16, 32), pool_after=(4,)), InputShape(1, 32, 32, 4))
    with pytest.raises(PipelineError, match="shrink to nothing"):
        build_model(params_for("cnn", filters=(8,) * 6, pool_after=(1, 2, 3, 4, 5, 6)), InputShape(1, 32, 32, 4))


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "mobilenet_v2"])
def test_custom_head_replaces_the_classifier(name: str) -> None:
    model = build_model(params_for(name, head=(64, 32)), InputShape(3, 32, 32, 6))
    head = model.get_submodule(head_name(model))
    assert [m.out_features for m in head.modules() if isinstance(m, nn.Linear)] == [64, 32, 6]


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
@pytest.mark.parametrize("name", ["cnn", "resnet18"])
@pytest.mark.parametrize("freeze", ["features", "head"])
def test_frozen_weights_stay_bit_identical_after_a_step(name: str, freeze: str) -> None:
    shape = InputShape(3, 32, 32, 5)
    model = build_model(params_for(name, freeze=freeze, head=(16,)), shape)
    head = head_name(model)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    one_step(model, shape)
    for key, value in model.named_parameters():
        in_head = key.startswith(head + ".")
        frozen = in_head if freeze == "head" else not in_head
        assert torch.equal(before[key], value) == frozen, key
    assert count_parameters(model) < sum(p.numel() for p in model.parameters())


def test_blurpool_rewrites_every_strided_layer() -> None:
    model = build_model(params_for("resnet18", blurpool=True), InputShape(3, 32, 32, 10))
    assert any(isinstance(m, BlurPool2d) for m in model.modules())
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)) and not (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)):
            assert m.stride in (1, (1, 1)), m
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    lenet = build_model(params_for("lenet5", blurpool=True), InputShape(1, 32, 32, 10))
    assert sum(isinstance(m, BlurPool2d) for m in lenet.modules()) == 2


def test_blurpool_is_a_normalised_low_pass() -> None:
    flat = torch.full((1, 3, 8, 8), 5.0)
    assert torch.allclose(BlurPool2d(2)(flat), torch.full((1, 3, 4, 4), 5.0))
    stripes = torch.zeros(1, 1, 8, 8)
    stripes[..., ::2] = 1.0  # the highest frequency: aliased by plain subsampling, averaged out here
    assert torch.allclose(BlurPool2d(2)(stripes)[..., 1:-1, 1:-1], torch.full((1, 1, 2, 2), 0.5))


def test_unknown_model_suggests_a_name() -> None:
    with pytest.raises(PipelineError, match=r"'model.name' parameter must be one of cnn, lenet5, mlp, efficientnet_lite0 "
                                            r"or a torchvision classifier .* Got 'resnet5' instead. Did you mean "
                                            r"'resnet50'\?"):
        build_model(params_for("resnet5"), InputShape(1, 32, 32, 10))


def test_lenet5_refuses_tiny_inputs_naming_the_param() -> None:
    with pytest.raises(PipelineError, match="lenet5: 8×8 px images shrink to nothing .* raise prepare.image_size"):
        build_model(params_for("lenet5"), InputShape(1, 8, 8, 10))


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="'mlp' is registered twice"):
        register("mlp")(lambda params, shape: nn.Identity())


# ------------------------------------------------------------------------------ pretrained weights
@pytest.fixture
def resnet18_file(tmp_path, monkeypatch):
    """A resnet18 state dict saved as models/pretrained/resnet18-weights.pth of a project in tmp_path."""
    import torchvision
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "models/pretrained/resnet18-weights.pth"
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    return reference, path


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_weights_file_round_trips_and_grey_sums_rgb(resnet18_file) -> None:
    reference, path = resnet18_file
    rgb = build_model(params_for("resnet18", pretrained=path.name), InputShape(3, 32, 32, 4))
    assert torch.equal(rgb.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert torch.equal(rgb.conv1.weight, reference.conv1.weight)
    grey = build_model(params_for("resnet18", pretrained=path.name), InputShape(1, 32, 32, 4))
    assert torch.allclose(grey.conv1.weight, reference.conv1.weight.sum(dim=1, keepdim=True))
    assert grey.fc.out_features == 4


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_hub_reads_torchvisions_file_name_from_the_declared_folder(resnet18_file, tmp_path, monkeypatch) -> None:
    reference, path = resnet18_file
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = "models/pretrained/resnet18-f37072fd.pth"
    with pytest.raises(PipelineError, match=f"no pretrained weights for resnet18 at {expected}: nothing is downloaded "
                                            f"at run time; on a machine with internet"):
        build_model(params_for("resnet18", pretrained="hub"), InputShape(3, 32, 32, 4))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())  # in the hub cache, DVC cannot see it: say where it must go
    with pytest.raises(PipelineError, match=f"at {expected}: .*; copy {cached} \\(the torch hub cache\\) there"):
        build_model(params_for("resnet18", pretrained="hub"), InputShape(3, 32, 32, 4))
    (tmp_path / expected).write_bytes(path.read_bytes())
    model = build_model(params_for("resnet18", pretrained="hub"), InputShape(3, 32, 32, 4))
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_same_padding_pads_the_odd_pixel_after_as_tensorflow_does() -> None:
    from classifier.models.efficientnet_lite import SamePadConv2d
    torch.manual_seed(0)
    conv = SamePadConv2d(2, 3, 3, stride=2, bias=False)
    for size in (7, 8):  # odd: one pixel each side; even: none before, one after
        x = torch.randn(1, 2, size, size)
        total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
        expected = nn.functional.conv2d(nn.functional.pad(x, [total // 2, total - total // 2] * 2), conv.weight, stride=2)
        assert conv(x).shape[-1] == math.ceil(size / 2)
        torch.testing.assert_close(conv(x), expected)
    assert total == 1  # at 8 px the padding is uneven: what a symmetric padding of 1 would get wrong


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_efficientnet_lite0_has_the_published_layout_and_loads_its_weights(tmp_path, monkeypatch) -> None:
    """The published file (efficientnet-lite0-57934424.pth) holds 296 entries and 4,652,008 weights
    under these names: a file of this layout loads, grey inputs get the summed RGB filters of the
    stem, whose TensorFlow padding is kept, and the classifier is fitted to the classes."""
    from classifier.models.efficientnet_lite import EfficientNetLite0, SamePadConv2d
    torch.manual_seed(5)
    reference = EfficientNetLite0()
    state = reference.state_dict()
    assert len(state) == 296 and sum(p.numel() for p in reference.parameters()) == 4_652_008
    assert "_blocks.0._expand_conv.weight" not in state and "_blocks.15._project_conv.weight" in state
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models/pretrained").mkdir(parents=True)
    torch.save(state, tmp_path / "models/pretrained/lite0.pth")
    grey = build_model(params_for("efficientnet_lite0", pretrained="lite0.pth"), InputShape(1, 64, 64, 2))
    assert isinstance(grey._conv_stem, SamePadConv2d) and grey._conv_stem.in_channels == 1
    assert torch.allclose(grey._conv_stem.weight, reference._conv_stem.weight.sum(dim=1, keepdim=True))
    assert torch.equal(grey._blocks[15]._project_conv.weight, reference._blocks[15]._project_conv.weight)
    assert grey._fc.out_features == 2 and grey.eval()(torch.randn(3, 1, 64, 64)).shape == (3, 2)
    with pytest.raises(PipelineError, match="'hub' applies to torchvision's classifiers: name efficientnet_lite0's "
                                            "weights file in models/pretrained"):
        build_model(params_for("efficientnet_lite0", pretrained="hub"), InputShape(3, 64, 64, 2))


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_missing_or_wrong_weights_file(resnet18_file) -> None:
    with pytest.raises(PipelineError, match="no pretrained weights for resnet18 at models/pretrained/nope.pth"):
        build_model(params_for("resnet18", pretrained="nope.pth"), InputShape(3, 32, 32, 4))
    _, path = resnet18_file
    with pytest.raises(PipelineError, match="not mobilenet_v2 weights"):
        build_model(params_for("mobilenet_v2", pretrained=path.name), InputShape(3, 32, 32, 4))
    with pytest.raises(PipelineError, match="'model.pretrained' parameter applies to published architectures .*, not lenet5"):
        build_model(params_for("lenet5", pretrained=path.name), InputShape(3, 32, 32, 4))


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_models_with_auxiliary_heads_train(name: str) -> None:
    shape = InputShape(3, 32, 32, 4)
    model = build_model(params_for(name), shape)
    assert one_step(model, shape).shape == (4, 4)  # one tensor in train mode, not (logits, aux, ...)


def test_dense_layers_too_big_to_allocate_are_refused() -> None:
    with pytest.raises(PipelineError, match=r"'model.hidden' parameter gives dense layers 1024 -> 65536 -> 65536 -> 3 "
                                            r"with [0-9,]+ weights, over the 200,000,000"):
        build_model(params_for("mlp", hidden=(65536, 65536)), InputShape(1, 32, 32, 3))
    with pytest.raises(PipelineError, match=r"'model.head' parameter gives dense layers"):
        build_model(params_for("lenet5", head=(65536, 65536)), InputShape(1, 32, 32, 3))


def test_the_params_know_which_architectures_are_the_projects_own() -> None:
    """model.pretrained is refused for them when params.yaml is checked, before any stage works."""
    from classifier.models.registry import MODELS
    from classifier.params.model import OWN_ARCHITECTURES
    assert set(OWN_ARCHITECTURES) == set(MODELS)
