"""augment.online_policy on whole batches: TrivialAugmentWide (one op per image) and RandAugment
(two), with torchvision's ops, magnitudes and arithmetic (equal to the bit), but each op run once a
batch, on the uint8 images that drew it, on their device, instead of a Python loop over images. The
draws (op, magnitude bin, sign per image) come from the host generator seeded by train.seed: the
images to gather are known there, and nothing waits on the device. Used by augment_online.py (train, lr_find).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
SIGNED = GEOMETRIC + ("Brightness", "Color", "Contrast", "Sharpness")
BINS = 31  # torchvision's num_magnitude_bins for both
RANDAUGMENT_OPS, RANDAUGMENT_BIN = 2, 9  # torchvision's RandAugment defaults: num_ops, magnitude


@lru_cache(maxsize=None)  # draw() asks every batch: the same few tables for a run
def magnitudes(policy: str, op: str, height: int, width: int) -> np.ndarray | None:
    """The BINS magnitudes of `op` (None: it takes none), as torchvision's policies tabulate them
    (read-only: shared between calls)."""
    wide = policy == "trivialaugment"
    table = {
        "ShearX": (0.0, 0.99 if wide else 0.3), "ShearY": (0.0, 0.99 if wide else 0.3),
        "TranslateX": (0.0, 32.0 if wide else 150.0 / 331.0 * width),
        "TranslateY": (0.0, 32.0 if wide else 150.0 / 331.0 * height),
        "Rotate": (0.0, 135.0 if wide else 30.0), "Solarize": (1.0, 0.0),
        **{name: (0.0, 0.99 if wide else 0.9) for name in ("Brightness", "Color", "Contrast", "Sharpness")},
    }
    if op == "Posterize":  # bits kept
        values = (8 - (torch.arange(BINS) / ((BINS - 1) / (6 if wide else 4)))).round().int().numpy()
    elif op in table:
        values = torch.linspace(*table[op], BINS).numpy()
    else:
        return None
    values.flags.writeable = False
    return values


def draw(policy: str, n: int, height: int, width: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per op applied in turn (1 for trivialaugment, 2 for randaugment): each image's op index into
    OPS and its signed magnitude (0 for ops without one)."""
    rounds = []
    for _ in range(1 if policy == "trivialaugment" else RANDAUGMENT_OPS):
        ops = rng.integers(len(OPS), size=n)
        bins = rng.integers(BINS, size=n) if policy == "trivialaugment" else np.full(n, RANDAUGMENT_BIN)
        negative = rng.random(n) <= 0.5
        values = np.zeros(n)
        for index, op in enumerate(OPS):
            chosen = ops == index
            table = magnitudes(policy, op, height, width) if chosen.any() else None
            if table is not None:
                values[chosen] = table[bins[chosen]] * np.where(negative[chosen] & (op in SIGNED), -1.0, 1.0)
        rounds.append((ops, values))
    return rounds


def apply_policy(images: torch.Tensor, policy: str, rng: np.random.Generator) -> torch.Tensor:
    """uint8 N×C×H×W -> the same with each image's drawn ops applied, on the images' device."""
    n, _, height, width = images.shape
    for ops, values in draw(policy, n, height, width, rng):
        images = apply_ops(images, ops, values)
    return images


def apply_ops(images: torch.Tensor, ops: np.ndarray, values: np.ndarray) -> torch.Tensor:
    """Image i gets OPS[ops[i]] at magnitude values[i]. The op of each image is known on the host, so
    each op runs once, on the images that drew it (gathered by index: no device sync), and the
    geometric ones share one grid_sample."""
    device = images.device
    out = images.clone()
    groups = [(np.flatnonzero(np.isin(ops, [OPS.index(name) for name in GEOMETRIC])), None)]
    groups += [(np.flatnonzero(ops == OPS.index(name)), op) for name, op in COLOUR_OPS.items()]
    for chosen, op in groups:
        if not len(chosen):
            continue
        index = torch.from_numpy(chosen).to(device)
        subset = images.index_select(0, index)
        if op is None:
            matrices = np.stack([inverse_affine(OPS[ops[i]], float(values[i]), images.shape[-2:]) for i in chosen])
            changed = affine_nearest(subset, torch.from_numpy(matrices.astype(np.float32)).to(device))
        else:
            changed = op(subset, values[chosen])
        out.index_copy_(0, index, changed)
    return out


# ------------------------------------------------------------------------------------ geometric
def inverse_affine(op: str, value: float, size: tuple[int, int]) -> np.ndarray:
    """The 2×3 output-to-input map torchvision's affine / rotate compute for `op` (its
    _get_inverse_affine_matrix, in pixels from the image centre); identity for other ops."""
    height, width = size
    angle, translate, shear, centre = 0.0, (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)
    if op == "ShearX":
        shear, centre = (math.degrees(math.atan(value)), 0.0), (-width * 0.5, -height * 0.5)
    elif op == "ShearY":
        shear, centre = (0.0, math.degrees(math.atan(value))), (-width * 0.5, -height * 0.5)
    elif op == "TranslateX":
        translate = (float(int(value)), 0.0)
    elif op == "TranslateY":
        translate = (0.0, float(int(value)))
    elif op == "Rotate":
        angle = -value  # rotate: counter-clockwise, the inverse of affine's angle
    # torchvision's _get_inverse_affine_matrix (inverted, scale 1), term for term: the same doubles.
    rot, shear_x, shear_y = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = centre
    cx_plus_tx, cy_plus_ty = cx + translate[0], cy + translate[1]
    a = math.cos(rot - shear_y) / math.cos(shear_y)
    b = -(a * math.tan(shear_x) + math.sin(rot))
    c = math.sin(rot - shear_y) / math.cos(shear_y)
    d = math.cos(rot) - c * math.tan(shear_x)
    matrix = [d / 1.0, -b / 1.0, 0.0, -c / 1.0, a / 1.0, 0.0]
    matrix[2] += cx - matrix[0] * cx_plus_tx - matrix[1] * cy_plus_ty
    matrix[5] += cy - matrix[3] * cx_plus_tx - matrix[4] * cy_plus_ty
    return np.array(matrix).reshape(2, 3)


def affine_nearest(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Each image resampled through its 2×3 matrix (pixels from the centre), nearest neighbour, zeros
    outside: torchvision's grid for tensors (_affine_grid), one grid_sample for the batch."""
    n, _, height, width = images.shape
    device = images.device
    base = torch.empty(1, height, width, 3, device=device)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=device))
    base[..., 1].copy_(torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height, device=device)
                       .unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = matrices.transpose(1, 2).div_(torch.tensor([0.5 * width, 0.5 * height], device=device))
    grid = base.view(1, height * width, 3).expand(n, -1, -1).bmm(scaled).view(n, height, width, 2)
    moved = nn.functional.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros",
                                      align_corners=False)
    return moved.to(images.dtype)


# --------------------------------------------------------------------------------------- colour
# Each op takes the batch and the images' magnitudes (float64, host). Factors are worked out in double
# precision on the host and rounded to float32 once, as a Python float reaches torchvision's kernels.
def _column(values: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32)).to(device).view(-1, 1, 1, 1)


def _blend(image: torch.Tensor, other: torch.Tensor, ratio: np.ndarray) -> torch.Tensor:
    device = image.device
    mixed = image.mul(_column(ratio, device)).addcmul_(other, _column(1.0 - ratio, device))
    return mixed.clamp_(0, 255).to(image.dtype)


def _grey(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(dim=-3).floor_()


def _brightness(images: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    return images.mul(_column(1.0 + values, images.device)).clamp_(0, 255).to(images.dtype)


def _colour(images: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    return images if images.shape[1] == 1 else _blend(images, _grey(images), 1.0 + values)


def _contrast(images: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    grey = _grey(images) if images.shape[1] == 3 else images.to(torch.float32)
    return _blend(images, grey.mean(dim=(-3, -2, -1), keepdim=True), 1.0 + values)


def _sharpness(images: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    channels, height, width = images.shape[-3:]
    if height <= 2 or width <= 2:
        return images
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], device=images.device).expand(channels, 1, 3, 3)
    out = images.to(torch.float32, copy=True)
    blurred = nn.functional.conv2d(out, kernel, groups=channels).round_()
    inner = out[..., 1:-1, 1:-1]  # the border keeps its pixels
    inner.addcmul_(blurred.sub_(inner), _column(1.0 - (1.0 + values), images.device))
    return out.clamp_(0, 255).to(images.dtype)


def _posterize(images: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    bits = values.astype(np.int64)
    masks = ((1 << bits) - 1) << (8 - bits)
    return images & torch.from_numpy(masks.astype(np.uint8)).to(images.device).view(-1, 1, 1, 1)


def _solarize(images: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    return torch.where(images >= _column(255 * values, images.device), 255 - images, images)


def _autocontrast(images: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    from torchvision.transforms.v2 import functional
    return functional.autocontrast(images)


def _equalize(images: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    from torchvision.transforms.v2 import functional
    return functional.equalize(images)


COLOUR_OPS = {"Brightness": _brightness, "Color": _colour, "Contrast": _contrast, "Sharpness": _sharpness,
              "Posterize": _posterize, "Solarize": _solarize, "AutoContrast": _autocontrast, "Equalize": _equalize}
