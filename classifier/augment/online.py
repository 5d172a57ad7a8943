"""What train does to every training batch on the device, seeded by train.seed: augment.online's
random resized crop, shift and mirror (one affine_grid/grid_sample), augment.online_policy's
TrivialAugment or RandAugment ops per image (augment_policies.py), augment.online_erasing's random rectangles, and
train.mixup_alpha / cutmix_alpha's mixed images with soft targets. Used by train and lr_find (a
range test sees the batches training will see).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from classifier.augment.policies import apply_policy


# Stream k draws from seed + this × k; the training loop gives each process and phase its own k
# (rank + processes × the epochs before the phase), so no two share their draws.
DRAW_SEED_STRIDE = 7919


ERASED_AREA = (0.02, 1 / 3)       # random erasing: the rectangle's share of the image (torchvision's defaults)
ERASED_ASPECT = (0.3, 1 / 0.3)    # and its height / width, drawn log-uniform


class Draws(NamedTuple):
    """A run's random draws for its batches: on the device (per-image crops and erasing) and on the
    host (the policy's op and magnitude per image, a batch's mixing weight and box: plain numbers,
    so nothing waits on the device)."""
    device: torch.Generator
    host: np.random.Generator


@dataclass(frozen=True)
class OnlineAugment:
    """Per batch, on the training device. With `resample` (augment.online) every image gets a random
    resized crop (area from crop_scale to 1, aspect 3:4 to 4:3) scaled back to full size, a random
    shift of up to `translate` of its side and, with hflip, a mirror half of the time: one affine
    resampling (bilinear, the border's values beyond the edge). Then `policy`, `erasing` and the
    mixing (see batch()). Seeded: a CPU run repeats exactly."""
    crop_scale: float
    translate: float
    hflip: bool
    seed: int
    resample: bool = True
    policy: str = "none"        # none, trivialaugment, randaugment: ops per image, on the uint8 pixels
    erasing: float = 0.0        # share of images with a random rectangle set to the mean (0 after normalising)
    mixup_alpha: float = 0.0    # Beta(α, α) weight of a blend with another image of the batch (0: off)
    cutmix_alpha: float = 0.0   # Beta(α, α) share kept when a box is pasted from another image (0: off)
    num_classes: int = 0        # for the soft targets of mixing

    def generator(self, device: torch.device, rank: int = 0) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed + DRAW_SEED_STRIDE * rank)

    def draws(self, device: torch.device, rank: int = 0) -> Draws:
        return Draws(self.generator(device, rank), np.random.default_rng(self.seed + DRAW_SEED_STRIDE * rank))

    def batch(self, images: torch.Tensor, labels: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor],
              draws: Draws) -> tuple[torch.Tensor, torch.Tensor]:
        """A uint8 batch and its labels -> the float inputs and the targets a training step takes:
        the policy's ops on the pixels, normalised, resampled, erased; mixed, with soft targets
        (N×classes, rows summing to 1) when mixup or cutmix is on, else the labels."""
        if self.policy != "none":
            images = apply_policy(images, self.policy, draws.host)
        x = normalize(images)
        if self.resample:
            x = self(x, draws.device)
        if self.erasing:
            x = erase(x, self.erasing, draws.device)
        if self.mixup_alpha or self.cutmix_alpha:
            return mix(x, labels, self.num_classes, self.mixup_alpha, self.cutmix_alpha, draws.host)
        return x, labels

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The resampling: float N×C×H×W (normalised) -> the same, cropped, shifted, mirrored."""
        n, device = images.shape[0], images.device
        uniform = torch.rand((n, 5), generator=generator, device=device)
        area = self.crop_scale + (1 - self.crop_scale) * uniform[:, 0]
        # Aspect 3:4 to 4:3, as far as the crop still fits: a full-area crop is square, the image itself.
        ratio = torch.exp((2 * uniform[:, 1] - 1) * torch.clamp(-torch.log(area), max=math.log(4 / 3)))
        width, height = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        # The crop's centre anywhere it fits, plus the shift (in grid units: the side is 2).
        shift_x = (1 - width) * (2 * uniform[:, 2] - 1) + 2 * self.translate * (2 * uniform[:, 3] - 1)
        shift_y = (1 - height) * (2 * uniform[:, 4] - 1) + 2 * self.translate * (
            2 * torch.rand(n, generator=generator, device=device) - 1)
        flip = torch.ones(n, device=device)
        if self.hflip:
            flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
        theta = torch.zeros((n, 2, 3), device=device)
        theta[:, 0, 0], theta[:, 0, 2] = width * flip, shift_x
        theta[:, 1, 1], theta[:, 1, 2] = height, shift_y
        grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
        return nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def erase(x: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020), vectorised: each image with probability `share` gets one
    rectangle of ERASED_AREA of its area and ERASED_ASPECT height/width, anywhere it fits, set to 0
    (the data set's mean colour, after normalising)."""
    n, _, height, width = x.shape
    u = torch.rand((n, 5), generator=generator, device=x.device)
    area = (ERASED_AREA[0] + (ERASED_AREA[1] - ERASED_AREA[0]) * u[:, 0]) * height * width
    aspect = torch.exp(math.log(ERASED_ASPECT[0]) + (math.log(ERASED_ASPECT[1]) - math.log(ERASED_ASPECT[0])) * u[:, 1])
    h = torch.sqrt(area * aspect).round().clamp(1, height)
    w = torch.sqrt(area / aspect).round().clamp(1, width)
    top, left = ((height - h + 1) * u[:, 2]).floor(), ((width - w + 1) * u[:, 3]).floor()
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + h).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + w).view(n, 1, 1)))
    chosen = (u[:, 4] < share).view(n, 1, 1)
    return x.masked_fill((inside & chosen).unsqueeze(1), 0.0)


def mix(x: torch.Tensor, labels: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
        rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019), one of them per batch (each half of the
    time when both are on), with a random partner from the same batch: the images blended with weight
    λ ~ Beta(α, α), or a box of share 1 - λ pasted; the targets λ·one-hot(own) + (1 - λ)·one-hot(partner),
    λ being the share of the image actually kept (a box clipped at the edge keeps more)."""
    n, _, height, width = x.shape
    partner = torch.from_numpy(rng.permutation(n)).to(x.device)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else rng.beta(mixup_alpha, mixup_alpha))
    if use_cutmix:
        cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
        centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
        top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h - cut_h // 2, height)
        left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w - cut_w // 2, width)
        x = x.clone()
        x[:, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (height * width)
    else:
        x = lam * x + (1 - lam) * x[partner]
    own = nn.functional.one_hot(labels, num_classes).float()
    return x, lam * own + (1 - lam) * own[partner]


def online_augment(augment, train, num_classes: int) -> OnlineAugment | None:
    """The augment.online* params (the whole section or train's view of it) and train's mixing as an
    OnlineAugment drawing from train.seed, or None when all are off."""
    if not (augment.online or augment.online_policy != "none" or augment.online_erasing
            or train.mixup_alpha or train.cutmix_alpha):
        return None
    return OnlineAugment(augment.online_crop_scale, augment.online_translate, augment.online_hflip, train.seed,
                         resample=augment.online, policy=augment.online_policy, erasing=augment.online_erasing,
                         mixup_alpha=train.mixup_alpha, cutmix_alpha=train.cutmix_alpha, num_classes=num_classes)
