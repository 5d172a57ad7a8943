"""A trained model's logits for a data set, in eval mode and in batches, with the arithmetic
training used (bf16 autocast and channels_last on CUDA when train.amp), and the loss and accuracy
of logits; test-time augmentation. Used by train (its val scores), evaluate and predict.
"""
from __future__ import annotations

import torch
from torch import nn

from classifier.training.device_dataset import DeviceDataset
from classifier.data.preprocessing import Normalizer


TTA_MODES = ("none", "flip", "crops")
TTA_CROP = 0.1  # crops: each corner's crop leaves out this share of the height and the width


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """Test-time augmentation: the normalised batch as the model is shown it. none: as is; flip: and
    mirrored left-right; crops: and its four corner crops (TTA_CROP of each side left out), each
    scaled back to full size."""
    if mode == "flip":
        return [x, x.flip(-1)]
    if mode != "crops":
        return [x]
    height, width = x.shape[-2:]
    cut_h, cut_w = max(1, round(height * TTA_CROP)), max(1, round(width * TTA_CROP))
    corners = [x[..., :height - cut_h, :width - cut_w], x[..., :height - cut_h, cut_w:],
               x[..., cut_h:, :width - cut_w], x[..., cut_h:, cut_w:]]
    return [x, *(nn.functional.interpolate(c, size=(height, width), mode="bilinear", align_corners=False)
                 for c in corners)]


def predict_logits(model: nn.Module, data: DeviceDataset | torch.Tensor, normalize: Normalizer,
                   batch_size: int = 1024, amp: bool = False, tta: str = "none") -> torch.Tensor:
    """Logits (N×classes, float32) in eval mode, for DeviceDataset or a uint8 N×C×H×W tensor. With
    test-time augmentation (`tta`: flip or crops), the log of the views' mean probabilities: softmax
    and cross-entropy read them as they read logits."""
    return predict_logits_and_tta(model, data, normalize, batch_size, amp, tta)[1]


@torch.no_grad()
def predict_logits_and_tta(model: nn.Module, data: DeviceDataset | torch.Tensor, normalize: Normalizer,
                           batch_size: int = 1024, amp: bool = False, tta: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """The plain logits and those under `tta` (the same tensor when it is none) from one pass: the
    plain view is the first of the TTA views, so evaluate reports both without running it twice."""
    model.eval()
    n = len(data)
    device = data.device
    plain, combined = [], []
    for start in range(0, n, batch_size):
        on_device = not isinstance(data, DeviceDataset) or data.resident  # streamed batches are gathered on the host
        index = torch.arange(start, min(start + batch_size, n), device=device if on_device else "cpu")
        x = data.get(index)[0] if isinstance(data, DeviceDataset) else data[index]
        views = []
        for view in tta_views(normalize(x), tta):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                views.append(model(memory_layout(view, amp)).float())
        plain.append(views[0])
        combined.append(views[0] if len(views) == 1 else
                        torch.log(torch.stack([torch.softmax(v, 1) for v in views]).mean(0)))
    if not plain:
        return torch.empty(0), torch.empty(0)
    plain_logits = torch.cat(plain)
    return plain_logits, (plain_logits if tta == "none" else torch.cat(combined))


def memory_layout(x: torch.Tensor, amp: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if amp and x.is_cuda and x.dim() == 4 else x


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy
