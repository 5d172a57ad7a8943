"""The prepare section: colour, size and normalisation of every image (read by prepare; carried in
the checkpoint to evaluate, predict and export).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .checks import Invalid, boolean, choice, number, spec


def _size(value: Any) -> tuple[int, int]:
    """An image size: one integer (square) or [height, width], each 4..4096 pixels."""
    what = "an integer or [height, width] between 4 and 4096"
    side = number(int, ge=4, le=4096)
    try:
        if isinstance(value, list) and len(value) == 2:
            return side(value[0]), side(value[1])
        return side(value), side(value)
    except Invalid:
        raise Invalid(what) from None


@dataclass(frozen=True)
class PrepareParams:
    SECTION: ClassVar[str] = "prepare"
    grayscale: bool = spec(boolean, "true: one grey channel; false: three RGB channels")
    image_size: tuple[int, int] = spec(_size, "pixels: the size every image is resized to")
    resize: str = spec(choice("stretch", "crop", "pad"),
                       "stretch: change the aspect ratio; crop: centre-crop to the aspect first; pad: letterbox")
    pad_mode: str = spec(choice("constant", "reflect"), "pad only: fill with pad_value, or mirror the border")
    pad_value: int = spec(number(int, ge=0, le=255), "pad only, constant: the fill grey level")
    interpolation: str = spec(choice("auto", "nearest", "linear", "cubic", "area"),
                              "auto: area when shrinking, linear when enlarging")
    normalize: str = spec(choice("standard", "minmax", "imagenet", "auto"),
                          "standard: per-channel mean/std of train; minmax: per-channel train min..max to 0..1; "
                          "imagenet: ImageNet's mean/std (pretrained torchvision weights); auto: the mean/std the "
                          "weights were trained with when model.pretrained is set, else standard (train decides)")
    trim: bool = spec(boolean, "crop each image's uniform border (rows and columns within 16 grey levels of the "
                                 "border colour) before resizing")
    invert: str = spec(choice("none", "dark", "light"),
                       "none; dark or light: invert each image whose border is the other polarity, so every "
                       "background is that one")
