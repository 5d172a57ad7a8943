"""Model registry: `model.name` in params.yaml -> an `nn.Module` fitted to the data's shape.

Ours: `mlp`, `lenet5`, `cnn` (what no library ships). Any other name is a published
architecture: `efficientnet_lite0` (efficientnet_lite.py) or one of torchvision's classifiers
(resnet18, resnet50, shufflenet_v2_x0_5, mobilenet_v2, alexnet, ...), whose first conv is adapted
to the input channels and whose last linear layer to the classes; an input too small for an
architecture (alexnet at 32 px) is upsampled inside the model.
No layer size is typed by hand: every dense input is measured with a dummy forward pass.

Then, for every model: `model.head` replaces the last linear layer with dense layers,
`model.blurpool` makes downsampling anti-aliased, `model.freeze` stops gradients. Weights are
never downloaded: `model.pretrained` reads the torch hub cache or a local file.

    @register("name")
    def build_name(params: ModelParams, shape: InputShape) -> nn.Module: ...
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from classifier.models.blurpool import apply_blurpool
from classifier.models.efficientnet_lite import INPUT_MEAN, INPUT_STD, EfficientNetLite0
from classifier.runtime.errors import PipelineError
from classifier.params.model import ModelParams
from classifier.runtime.paths import PRETRAINED_DIR
from classifier.data.preprocessing import imagenet_stats


@dataclass(frozen=True)
class InputShape:
    channels: int
    height: int
    width: int
    num_classes: int


Builder = Callable[[ModelParams, InputShape], nn.Module]
MODELS: dict[str, Builder] = {}
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True), "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}
UPSAMPLE_SIZES = (64, 96, 128, 160, 224)  # tried in turn when an architecture rejects a small input
MAX_DENSE_PARAMETERS = 200_000_000  # 800 MB of float32 weights: a bigger dense stack is a typo, not a plan


def register(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = builder
        return builder
    return add


# Published architectures beside torchvision's, whose pretrained weights files load as they are.
OTHER_ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {"efficientnet_lite0": EfficientNetLite0}


def torchvision_names() -> list[str]:
    import torchvision
    return sorted(torchvision.models.list_models(module=torchvision.models))


def published_names() -> list[str]:
    """The architectures `model.pretrained` applies to: torchvision's classifiers and OTHER_ARCHITECTURES."""
    return sorted([*OTHER_ARCHITECTURES, *torchvision_names()])


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (frozen ones excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------- building blocks
def dense_stack(widths: list[int], dropout: float, activation: str = "relu", batch_norm: bool = False,
                param: str = "model.head") -> nn.Sequential:
    """Linear layers between consecutive widths; [batch norm,] activation and dropout between them.
    `param` (the key that set the widths) is named when the layers would be too big to allocate."""
    weights = sum(a * b + b for a, b in zip(widths, widths[1:]))
    if weights > MAX_DENSE_PARAMETERS:
        raise PipelineError(f"The '{param}' parameter gives dense layers {' -> '.join(map(str, widths))} with "
                            f"{weights:,} weights, over the {MAX_DENSE_PARAMETERS:,} this pipeline allows: use "
                            f"narrower layers")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def _measure(features: nn.Module, shape: InputShape) -> torch.Size:
    """Output shape of `features` for one input of `shape` (no gradients, eval mode)."""
    was_training = features.training
    features.eval()
    with torch.no_grad():
        out = features(torch.zeros(1, shape.channels, shape.height, shape.width))
    features.train(was_training)
    return out.shape


def _features_then_classifier(features: nn.Module, params: ModelParams, shape: InputShape,
                              hidden: list[int]) -> nn.Module:
    """features -> flatten -> dense layers `hidden` -> classes, the first dense size measured."""
    if params.blurpool:
        features = apply_blurpool(features)
    try:
        out = _measure(features, shape)
    except RuntimeError:
        out = None
    if out is None or min(out[2:]) < 1:
        raise PipelineError(f"{params.name}: {shape.height}×{shape.width} px images shrink to nothing in its "
                            f"conv layers: raise prepare.image_size or use fewer pool_after layers")
    classifier = dense_stack([out[1:].numel(), *hidden, shape.num_classes], params.dropout, params.activation,
                             param="prepare.image_size")
    return nn.Sequential(features, nn.Flatten(), classifier)


# ----------------------------------------------------------------------------------- our models
@register("mlp")
def build_mlp(params: ModelParams, shape: InputShape) -> nn.Module:
    """Flattened pixels -> hidden layers -> classes; `hidden: []` is softmax regression."""
    n_inputs = shape.channels * shape.height * shape.width
    return nn.Sequential(nn.Flatten(), dense_stack([n_inputs, *params.hidden, shape.num_classes], params.dropout,
                                                   params.activation, params.batch_norm, "model.hidden"))


@register("lenet5")
def build_lenet5(params: ModelParams, shape: InputShape) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with max pooling: 5×5 convs of 6 and 16 maps, each followed by
    2×2 pooling, then dense 120 -> 84 -> classes; the first dense size follows the input size."""
    act = ACTIVATIONS[params.activation]
    features = nn.Sequential(nn.Conv2d(shape.channels, 6, 5, padding=2), act(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5), act(), nn.MaxPool2d(2))
    return _features_then_classifier(features, params, shape, [120, 84])


@register("cnn")
def build_cnn(params: ModelParams, shape: InputShape) -> nn.Module:
    """Conv layers of `filters` channels (same padding), [batch norm,] activation, 2×2 max pooling
    after the layers in `pool_after`, then a linear layer to the classes (see `model.head`)."""
    if not params.filters:
        raise PipelineError("The 'model.filters' parameter must list at least one conv layer for cnn. Got [] instead.")
    beyond = [i for i in params.pool_after if i > len(params.filters)]
    if beyond:
        raise PipelineError(f"The 'model.pool_after' parameter must name conv layers 1..{len(params.filters)}. "
                            f"Got {list(params.pool_after)} instead.")
    layers: list[nn.Module] = []
    channels = shape.channels
    for i, width in enumerate(params.filters, start=1):
        layers.append(nn.Conv2d(channels, width, params.kernel_size, padding=params.kernel_size // 2,
                                bias=not params.batch_norm))
        if params.batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(ACTIVATIONS[params.activation]())
        if i in params.pool_after:
            layers.append(nn.MaxPool2d(2))
        channels = width
    return _features_then_classifier(nn.Sequential(*layers), params, shape, [])


# ------------------------------------------------------------------------------- torchvision
def _named(model: nn.Module, kind: type, last: bool) -> tuple[str, nn.Module]:
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, kind)]
    if not found:
        raise PipelineError(f"{type(model).__name__} has no {kind.__name__} layer to adapt to the data: "
                            f"choose another model.name")
    return found[-1] if last else found[0]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def pretrained_file(name: str, choice: str) -> Path:
    """The weights file `model.pretrained` names, always inside models/pretrained/ (train's declared
    dependency, so replacing the file reruns train): `hub` is the file name torchvision gives `name`."""
    if choice != "hub":
        return PRETRAINED_DIR / choice
    if name in OTHER_ARCHITECTURES:
        raise PipelineError(f"The 'model.pretrained' parameter 'hub' applies to torchvision's classifiers: name "
                            f"{name}'s weights file in {PRETRAINED_DIR}")
    import torchvision
    try:
        url = torchvision.models.get_model_weights(name).DEFAULT.url
    except (ValueError, AttributeError):
        raise PipelineError(f"torchvision publishes no pretrained weights for {name}") from None
    return PRETRAINED_DIR / url.rsplit("/", 1)[1]


def pretrained_input_stats(name: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std (on 0..1) the pretrained weights of architecture `name` were
    trained with: ImageNet's for torchvision's (their averages for grey images), efficientnet_lite0's own."""
    if name in OTHER_ARCHITECTURES:
        return (INPUT_MEAN,) * channels, (INPUT_STD,) * channels
    return imagenet_stats(channels)


def load_pretrained(model: nn.Module, name: str, choice: str) -> None:
    path = pretrained_file(name, choice)
    if not path.is_file():
        cached = Path(torch.hub.get_dir()) / "checkpoints" / path.name
        where = (f"copy {cached} (the torch hub cache) there" if cached.is_file() else
                 f"on a machine with internet, torchvision.models.get_model('{name}', weights='DEFAULT') saves "
                 f"it under ~/.cache/torch/hub/checkpoints/: copy it there")
        raise PipelineError(f"no pretrained weights for {name} at {path}: nothing is downloaded at run time; {where}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except Exception as exc:  # a wrong architecture's file, a pickle, a truncated file
        raise PipelineError(f"{path}: not {name} weights ({' '.join(str(exc).split())[:200]})") from None


def build_published(params: ModelParams, shape: InputShape, with_weights: bool = True) -> nn.Module:
    """A published architecture (published_names) with its pretrained weights, fitted to the data."""
    if params.name in OTHER_ARCHITECTURES:
        model = OTHER_ARCHITECTURES[params.name]()
    else:
        import torchvision
        model = torchvision.models.get_model(params.name, weights=None)
    if params.pretrained and with_weights:
        load_pretrained(model, params.name, params.pretrained)
    conv_name, conv = _named(model, nn.Conv2d, last=False)
    if conv.in_channels != shape.channels:
        new = type(conv)(shape.channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None)  # its padding rule too
        if params.pretrained and shape.channels == 1:  # a grey image is R = G = B: sum the RGB filters
            with torch.no_grad():
                new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
        _replace(model, conv_name, new)
    linear_name, linear = _named(model, nn.Linear, last=True)
    _replace(model, linear_name, nn.Linear(linear.in_features, shape.num_classes))
    if getattr(model, "aux_logits", False):
        # googlenet and inception_v3 return (logits, aux...) in train mode; the auxiliary heads were a
        # training aid for ImageNet from scratch: drop them (after the weights, whose files hold them).
        model.aux_logits = False
        for name in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, name):
                setattr(model, name, None)
    return model


# ------------------------------------------------------------------------------------- assembly
def _fits(model: nn.Module, shape: InputShape, size: tuple[int, int]) -> bool:
    try:
        _measure(model, InputShape(shape.channels, *size, shape.num_classes))
        return True
    except (RuntimeError, ValueError, AssertionError):
        return False


def head_name(model: nn.Module) -> str:
    """The classifier's last part: the last linear layer, or the dense stack `model.head` put there."""
    return getattr(model, "head_module_name", None) or _named(model, nn.Linear, last=True)[0]


def head_parameters(model: nn.Module) -> set[str]:
    """The names of the head's parameters (head_name's); every other parameter is the features'."""
    head = head_name(model)
    return {name for name, _ in model.named_parameters() if name == head or name.startswith(head + ".")}


def check_name(name: str) -> None:
    """Raise naming model.name unless it is one of ours or a published architecture."""
    if name in MODELS or name in published_names():
        return
    import difflib
    guess = difflib.get_close_matches(name, [*MODELS, *published_names()], n=1)
    hint = f" Did you mean {guess[0]!r}?" if guess else ""
    raise PipelineError(f"The 'model.name' parameter must be one of {', '.join(sorted(MODELS))}, efficientnet_lite0 "
                        f"or a torchvision classifier (resnet18, resnet50, mobilenet_v2, ...). Got {name!r} "
                        f"instead.{hint}")


def build_model(params: ModelParams, shape: InputShape, with_weights: bool = True) -> nn.Module:
    """The model `params` describe for inputs of `shape`. `with_weights=False` skips pretrained
    weights (a checkpoint's state dict is about to replace them)."""
    if params.name in MODELS:
        model = MODELS[params.name](params, shape)
    elif params.name in published_names():
        model = build_published(params, shape, with_weights)
        if params.blurpool:
            model = apply_blurpool(model)
        if not _fits(model, shape, (shape.height, shape.width)):
            size = next((s for s in UPSAMPLE_SIZES if s >= max(shape.height, shape.width) and _fits(model, shape, (s, s))),
                        None)
            if size is None:
                raise PipelineError(f"{params.name} does not accept {shape.height}×{shape.width} px inputs")
            model = nn.Sequential(nn.Upsample(size=(size, size), mode="bilinear", align_corners=False), model)
    else:
        check_name(params.name)
    if params.head:
        name, last = _named(model, nn.Linear, last=True)
        _replace(model, name, dense_stack([last.in_features, *params.head, last.out_features], params.dropout,
                                          params.activation))
        model.head_module_name = name
    head = head_parameters(model)
    for name, parameter in model.named_parameters():
        in_head = name in head
        if (params.freeze == "features" and not in_head) or (params.freeze == "head" and in_head):
            parameter.requires_grad_(False)
    return model
