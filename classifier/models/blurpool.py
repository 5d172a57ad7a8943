"""Anti-aliased downsampling for `model.blurpool` (Zhang 2019, "Making convolutional networks
shift-invariant again"): every strided conv or max pool of a model rewritten to blur before it
subsamples. Used by the model registry (models.py).
"""
from __future__ import annotations

import torch
from torch import nn


class BlurPool2d(nn.Module):
    """Low-pass then subsample (Zhang 2019, "Making convolutional networks shift-invariant again"):
    a 3×3 binomial filter [1 2 1]ᵀ[1 2 1] / 16 applied per channel with stride `stride`."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride
        taps = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (taps[:, None] * taps[None, :] / 16).view(1, 1, 3, 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        weight = self.kernel.to(x.dtype).expand(channels, 1, 3, 3)
        return nn.functional.conv2d(x, weight, stride=self.stride, groups=channels)


def _stride(value) -> int:
    return value if isinstance(value, int) else max(value)


def apply_blurpool(module: nn.Module) -> nn.Module:
    """Rewrite, in place, every strided conv as conv(stride 1) + BlurPool and every strided max
    pool as max pool(stride 1) + BlurPool. Returns the module (or its replacement if it is one)."""
    def rewrite(m: nn.Module) -> nn.Module | None:
        if isinstance(m, nn.Conv2d) and _stride(m.stride) > 1:
            stride = _stride(m.stride)
            m.stride = (1, 1)
            return nn.Sequential(m, BlurPool2d(stride))
        if isinstance(m, nn.MaxPool2d) and _stride(m.stride) > 1:
            stride = _stride(m.stride)
            return nn.Sequential(nn.MaxPool2d(m.kernel_size, 1, m.padding, m.dilation, ceil_mode=m.ceil_mode),
                                 BlurPool2d(stride))
        return None

    replacement = rewrite(module)
    if replacement is not None:
        return replacement
    for name, child in list(module.named_children()):
        setattr(module, name, apply_blurpool(child))
    return module
