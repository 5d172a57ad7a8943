"""The model section: the architecture and its weights (read by train; carried in the checkpoint).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from classifier.runtime.errors import PipelineError
from classifier.runtime.paths import PRETRAINED_DIR
from .checks import Invalid, MAX_WIDTH, boolean, choice, int_list, number, spec, string


def _pretrained(value: Any) -> str:
    """'', 'hub' or a file in PRETRAINED_DIR (given by name or path): only there is it a dependency of train."""
    what = f"'' (none), 'hub' (torchvision's file name for model.name) or a weights file in {PRETRAINED_DIR}/"
    if not isinstance(value, str):
        raise Invalid(what)
    if value in ("", "hub") or "/" not in value:
        return value
    path = Path(value)
    if path.is_absolute() or path.parent != PRETRAINED_DIR:
        raise Invalid(what + ", the folder dvc.yaml declares as train's dependency, so that replacing "
                              "the file reruns train: copy it there")
    return path.name


OWN_ARCHITECTURES = ("mlp", "lenet5", "cnn")  # classifier/models/registry.py registers each (a test keeps them equal)


@dataclass(frozen=True)
class ModelParams:
    SECTION: ClassVar[str] = "model"
    name: str = spec(string, "architecture: mlp, lenet5, cnn, or a torchvision classifier (resnet18, ...)")
    hidden: tuple[int, ...] = spec(
        int_list(number(int, ge=1, le=MAX_WIDTH), f"a list of integers from 1 to {MAX_WIDTH}"),
        "mlp: hidden layer widths ([] = softmax regression)")
    activation: str = spec(choice("relu", "leaky_relu", "tanh", "sigmoid"), "mlp, lenet5, cnn: activation")
    batch_norm: bool = spec(boolean, "mlp, cnn: batch normalisation after each layer")
    dropout: float = spec(number(float, ge=0, lt=1), "dropout rate before each dense layer")
    filters: tuple[int, ...] = spec(
        int_list(number(int, ge=1, le=MAX_WIDTH), f"a list of integers from 1 to {MAX_WIDTH}"),
        "cnn: output channels of each conv layer")
    kernel_size: int = spec(number(int, ge=1, le=15), "cnn: conv kernel size (padded to keep the size)")
    pool_after: tuple[int, ...] = spec(
        int_list(number(int, ge=1, le=1000), "a list of distinct integers from 1 to 1000", unique=True),
        "cnn: conv layers (1 = first) followed by 2x2 max pooling")
    head: tuple[int, ...] = spec(
        int_list(number(int, ge=1, le=MAX_WIDTH), f"a list of integers from 1 to {MAX_WIDTH}"),
        "dense layers that replace the last classifier layer ([]: the architecture's own)")
    pretrained: str = spec(_pretrained, f"torchvision models and efficientnet_lite0: '' (none), hub (torchvision's "
                                         f"file for model.name) or a weights file, both read from {PRETRAINED_DIR}/")
    freeze: str = spec(choice("none", "features", "head"), "none; features: train the head only; head: the features only")
    blurpool: bool = spec(boolean, "anti-aliased downsampling: strided convs and max pools blur before subsampling")

    def __post_init__(self) -> None:
        if self.pretrained and self.name in OWN_ARCHITECTURES:
            raise PipelineError(f"The 'model.pretrained' parameter applies to published architectures "
                                f"(efficientnet_lite0, torchvision's), not {self.name}: set it to '' for "
                                f"{self.name}. Got {self.pretrained!r} instead.")
