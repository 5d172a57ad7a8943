"""The augment section's online* keys: what train does to every batch on the device (read by train
and lr_find).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .checks import boolean, choice, number, spec


@dataclass(frozen=True)
class OnlineAugmentParams:
    SECTION: ClassVar[str] = "augment"
    SHARES_SECTION: ClassVar[bool] = True  # the other keys: augment.py
    online: bool = spec(boolean, "train: a random resized crop, shift and (online_hflip) mirror of every training "
                                  "image in every batch, made on the training device (GPU or CPU), on top of the copies")
    online_crop_scale: float = spec(number(float, gt=0, le=1),
                                    "online: the smallest crop, as a share of the image's area (1: no crop)")
    online_translate: float = spec(number(float, ge=0, le=0.5),
                                   "online: the largest shift, as a share of the image's side (0: none)")
    online_hflip: bool = spec(boolean, "online: mirror half of the images left-right")
    online_policy: str = spec(choice("none", "trivialaugment", "randaugment"),
                              "train: torchvision's TrivialAugmentWide (one random op per image of every batch) "
                              "or RandAugment (two) (none: off)")
    online_erasing: float = spec(number(float, ge=0, le=1),
                                 "train: the share of images of every batch with a random rectangle (2% to 33% of "
                                 "the area) set to the mean (0: off)")
