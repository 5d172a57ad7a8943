"""Inside the trained network: what evaluate draws of it (the MLP log tracked layer weights, the
CIFAR log wanted feature maps). Pure functions of a model and arrays; the PNGs go through
classifier/evaluation/plotting.py and eval_charts.py's plotting.

    weight_layers       the conv and dense weights, in forward order
    first_layer_images  the first conv layer's filters, or the first dense layer's weights when it
                        reads the image directly (an MLP), each as an image
    feature_maps        the first conv layer's output for a few images, one image per channel
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from classifier.data.preprocessing import Normalizer

MAX_FILTERS = 16    # first-layer images drawn
MAX_CHANNELS = 6    # feature maps drawn per image


def weight_layers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(kind and name, weight) of every conv and dense layer, in the order the modules are registered:
    ("conv 0", 6×1×5×5: out × in channels × kernel), ("dense 3", 120×400: out × in features)."""
    return [(f"{'conv' if isinstance(module, nn.Conv2d) else 'dense'} {name}", module.weight.detach().float().cpu())
            for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scaled so that its own min..max spans 0..255 (a constant array is mid-grey)."""
    low, high = float(array.min()), float(array.max())
    if high - low < 1e-12:
        return np.full(array.shape, 128, np.uint8)
    return np.round((array - low) / (high - low) * 255).astype(np.uint8)


def first_layer_images(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[str, list[np.ndarray]]:
    """The first layer's weights as uint8 H×W×C images, each scaled to its own range, and what they
    are. A conv layer: one image per filter (RGB when it reads 3 channels, else the mean over its
    input channels). A dense layer reading the C×H×W pixels: one image per unit. ("", []) otherwise."""
    layers = weight_layers(model)
    if not layers:
        return "", []
    name, weight = layers[0]
    channels, height, width = input_shape
    if weight.dim() == 4:
        filters = weight[:MAX_FILTERS].numpy()  # out × in × kh × kw
        images = [to_uint8(f.transpose(1, 2, 0) if f.shape[0] == 3 else f.mean(axis=0)[:, :, None]) for f in filters]
        out, inputs, kh, kw = weight.shape
        return f"first layer ({name}): {out} filters of {inputs}×{kh}×{kw}", images
    if weight.shape[1] == channels * height * width:
        units = weight[:MAX_FILTERS].numpy().reshape(-1, channels, height, width)
        return (f"first layer ({name}): the weights of {weight.shape[0]} units over the {channels}×{height}×{width} pixels",
                [to_uint8(u.transpose(1, 2, 0)) for u in units])
    return "", []


@torch.no_grad()
def feature_maps(model: nn.Module, images: torch.Tensor, normalize: Normalizer) -> tuple[str, np.ndarray]:
    """The first conv layer's output (N × channels × H × W, float) for uint8 N×C×H×W `images`, in
    eval mode, and the layer's name; ("", empty) for a model without a conv layer."""
    first = next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        return "", np.empty(0)
    captured = []
    handle = first[1].register_forward_hook(lambda _module, _inputs, output: captured.append(output.float().cpu()))
    try:
        model.eval()
        model(normalize(images))
    finally:
        handle.remove()
    return first[0], captured[0].numpy()
