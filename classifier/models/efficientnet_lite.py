"""EfficientNet-Lite0 (Tan & Le 2019, the Lite variant of TensorFlow's reference, 2020): the
EfficientNet-B0 layout without squeeze-excitation, with ReLU6 and TensorFlow's "same" padding, in
the layer names of the published PyTorch weights (efficientnet-lite0-57934424.pth, ImageNet, 4.7M
weights), so that `model.pretrained` loads them. Built for CPUs and phones: a pretrained model that
fine-tunes in minutes on a laptop. Used through the model registry (models.py).
"""
from __future__ import annotations

import math

from torch import nn

# Per stage: expansion ratio, kernel, stride of its first block, output channels, blocks (B0's).
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM, HEAD = 32, 1280
# TensorFlow's batch norm (momentum 0.99 there), which the weights were trained with. Its slow running
# averages keep ImageNet's statistics through a short fine-tuning: with PyTorch's 0.1, one 12-epoch run
# on 245 photos scored 68% against 79%. From scratch they lag behind the weights instead.
BATCH_NORM = {"eps": 1e-3, "momentum": 0.01}
# What the weights saw: (pixel - 127) / 128 on 0..255, i.e. these on 0..1, for each of R, G, B.
INPUT_MEAN, INPUT_STD = 127 / 255, 128 / 255


class SamePadConv2d(nn.Conv2d):
    """A conv with TensorFlow's "same" padding: output side ceil(input / stride), the odd pixel of
    padding at the bottom and right (what the weights were trained with; PyTorch pads symmetrically)."""

    def forward(self, x):
        pads = []
        for size, kernel, stride, dilation in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            pads.append(max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0))
        (pad_h, pad_w) = pads
        if pad_h or pad_w:
            x = nn.functional.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


class MobileInvertedBlock(nn.Module):
    """MBConv without squeeze-excitation: 1×1 expansion (unless the ratio is 1), depthwise conv,
    1×1 projection, each with batch norm, ReLU6 after the first two; the input added back when the
    shape allows."""

    def __init__(self, channels_in: int, channels_out: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        middle = channels_in * expand
        if expand != 1:
            self._expand_conv = SamePadConv2d(channels_in, middle, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(middle, **BATCH_NORM)
        self._depthwise_conv = SamePadConv2d(middle, middle, kernel, stride=stride, groups=middle, bias=False)
        self._bn1 = nn.BatchNorm2d(middle, **BATCH_NORM)
        self._project_conv = SamePadConv2d(middle, channels_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(channels_out, **BATCH_NORM)
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, x):
        y = x
        if hasattr(self, "_expand_conv"):
            y = nn.functional.relu6(self._bn0(self._expand_conv(y)))
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, STEM, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM, **BATCH_NORM)
        blocks, channels = [], STEM
        for expand, kernel, stride, channels_out, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MobileInvertedBlock(channels, channels_out, expand, kernel, stride if i == 0 else 1))
                channels = channels_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(channels, HEAD, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD, **BATCH_NORM)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD, num_classes)

    def forward(self, x):
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))
