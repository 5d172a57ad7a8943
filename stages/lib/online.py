"""augment.online: a random resized crop, a shift and an optional mirror of every training batch,
made on the training device as one affine_grid/grid_sample, seeded by train.seed. Used by train and
lr_find (a range test sees the batches training will see).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


# Each caller's draws from seed + this × its number (a data-parallel rank; a phase): apart by a prime.
DRAW_SEED_STRIDE = 7919


@dataclass(frozen=True)
class OnlineAugment:
    """augment.online: per batch, on the training device, every image gets a random resized crop
    (area from crop_scale to 1, aspect 3:4 to 4:3) scaled back to full size, a random shift of up
    to `translate` of its side and, with hflip, a mirror half of the time: one affine resampling
    (bilinear, the border's values beyond the edge). Seeded: a CPU run repeats exactly."""
    crop_scale: float
    translate: float
    hflip: bool
    seed: int

    def generator(self, device: torch.device, rank: int = 0) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed + DRAW_SEED_STRIDE * rank)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Float N×C×H×W (normalised) -> the same, transformed."""
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


def online_augment(augment, seed: int) -> OnlineAugment | None:
    """The augment.online* params (the whole section or train's view of it) as an OnlineAugment drawing
    from `seed` (train.seed: the run's), or None when off."""
    if not augment.online:
        return None
    return OnlineAugment(augment.online_crop_scale, augment.online_translate, augment.online_hflip, seed)
