"""The augment section's copies made before training (read by the augment stage); its online*
keys are train's (online_augment.py), so that changing them reruns train and not augment.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .checks import Invalid, MAX_SEED, boolean, int_list, number, spec, string_list


def _odd_kernel(value: Any) -> int:
    value = number(int, ge=3, le=4095)(value)  # augment also refuses a kernel wider than the images
    if value % 2 == 0:
        raise Invalid("odd")
    return value


@dataclass(frozen=True)
class AugmentParams:
    SECTION: ClassVar[str] = "augment"
    SHARES_SECTION: ClassVar[bool] = True  # the online* keys: online_augment.py
    blur_kernels: tuple[int, ...] = spec(
        int_list(_odd_kernel, "a list of distinct odd integers from 3 to 4095", unique=True),
        "box-blur kernel sizes, at most the images' smaller side; each adds one copy")
    hflip: bool = spec(boolean, "add a left-right mirrored copy of every image and blur")
    vflip: bool = spec(boolean, "add an upside-down copy of every image and blur")
    rotation: float = spec(number(float, ge=0, le=180), "degrees: each copy is rotated by a random angle in +-this")
    noise_std: float = spec(number(float, ge=0, le=255), "grey levels: Gaussian noise added to each copy")
    clones: int = spec(number(int, ge=1, le=1000), "the set of copies is made this many times (new random draws each)")
    classes: tuple[str, ...] = spec(string_list, "only these classes get copies ([]: every class)")
    seed: int = spec(number(int, ge=0, le=MAX_SEED), "seed of the random rotations and noise")
