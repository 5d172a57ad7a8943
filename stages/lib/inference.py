"""A trained model's logits for a data set, in eval mode and in batches, with the arithmetic
training used (bf16 autocast and channels_last on CUDA when train.amp), and the loss and accuracy
of logits. Used by train (its val scores), evaluate and predict.
"""
from __future__ import annotations

import torch
from torch import nn

from .data import DeviceDataset
from .preprocess import Normalizer


@torch.no_grad()
def predict_logits(model: nn.Module, data: DeviceDataset | torch.Tensor, normalize: Normalizer,
                   batch_size: int = 1024, amp: bool = False) -> torch.Tensor:
    """Logits (N×classes, float32) in eval mode, for DeviceDataset or a uint8 N×C×H×W tensor."""
    model.eval()
    n = len(data)
    device = data.device
    chunks = []
    for start in range(0, n, batch_size):
        on_device = not isinstance(data, DeviceDataset) or data.resident  # streamed batches are gathered on the host
        index = torch.arange(start, min(start + batch_size, n), device=device if on_device else "cpu")
        x = data.get(index)[0] if isinstance(data, DeviceDataset) else data[index]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            chunks.append(model(memory_layout(normalize(x), amp)).float())
    return torch.cat(chunks) if chunks else torch.empty(0)


def memory_layout(x: torch.Tensor, amp: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if amp and x.is_cuda and x.dim() == 4 else x


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy
