"""Model registry: `model.name` in params.yaml -> a builder of an `nn.Module`.

Builders take the validated ModelParams and the data's shape, so no layer size is ever typed by
hand: LeNet-5's first dense layer is computed from the input size. Add an architecture with

    @register("name")
    def build_name(params: ModelParams, shape: InputShape) -> nn.Module: ...
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import PipelineError
from .params import ModelParams, parse_section


@dataclass(frozen=True)
class InputShape:
    channels: int
    height: int
    width: int
    num_classes: int


Builder = Callable[[ModelParams, InputShape], nn.Module]
MODELS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = builder
        return builder
    return add


def build_model(params: ModelParams, shape: InputShape) -> nn.Module:
    if params.name not in MODELS:
        raise PipelineError(
            f"The 'model.name' parameter must be one of {', '.join(sorted(MODELS))}. Got {params.name!r} instead.")
    return MODELS[params.name](params, shape)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _dense_stack(widths: list[int], dropout: float) -> list[nn.Module]:
    """Linear layers between consecutive widths, ReLU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    return layers


@register("mlp")
def build_mlp(params: ModelParams, shape: InputShape) -> nn.Module:
    """Flattened pixels -> hidden layers -> classes; `hidden: []` is softmax regression."""
    n_inputs = shape.channels * shape.height * shape.width
    return nn.Sequential(nn.Flatten(), *_dense_stack([n_inputs, *params.hidden, shape.num_classes], params.dropout))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling: two 5×5 convs (6, 16 maps), each
    followed by 2×2 pooling, then dense 120 -> 84 -> classes. Any input of at least 16×16 px."""

    def __init__(self, channels: int, height: int, width: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        # 5×5 conv with padding 2 keeps the size, pool halves it; unpadded 5×5 conv takes 4 off.
        out_h, out_w = (height // 2 - 4) // 2, (width // 2 - 4) // 2
        self.classifier = nn.Sequential(nn.Flatten(), *_dense_stack([16 * out_h * out_w, 120, 84, num_classes], dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("lenet5")
def build_lenet5(params: ModelParams, shape: InputShape) -> nn.Module:
    if min(shape.height, shape.width) < 16:
        raise PipelineError(
            f"lenet5 needs images of at least 16×16 px, got {shape.height}×{shape.width}: raise prepare.size")
    return LeNet5(shape.channels, shape.height, shape.width, shape.num_classes, params.dropout)


def load_checkpoint(path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """Rebuild the trained model from models/model.pt (safe `weights_only` load) in eval mode.

    Returns the model and the checkpoint, whose `classes`, `input_shape` and `normalization`
    say how to prepare an input.
    """
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    channels, height, width = checkpoint["input_shape"]
    shape = InputShape(channels, height, width, len(checkpoint["classes"]))
    model = build_model(parse_section("model", checkpoint["model"]), shape)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint
