"""Pure image-array functions: colour conversion, resize, box blur, flips. No file I/O.

Conventions: one image is uint8 H×W×C with C = 1 (grey) or 3 (RGB); a batch is N×H×W×C.
OpenCV drops a trailing channel of size 1, so every function puts it back.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def _with_channels(image: np.ndarray) -> np.ndarray:
    return image[:, :, None] if image.ndim == 2 else image


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """H×W×C (C = 1 or 3, RGB) -> H×W×1, with OpenCV's luma weights (0.299 R + 0.587 G + 0.114 B)."""
    image = _with_channels(image)
    if image.shape[2] == 1:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """H×W×C (C = 1 or 3) -> H×W×3; grey is replicated into the three channels."""
    image = _with_channels(image)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def resize_stretch(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize H×W×C to size = (height, width), stretching the aspect ratio: never pads.

    Area interpolation when shrinking (no aliasing), bilinear when enlarging.
    """
    height, width = size
    image = _with_channels(image)
    if image.shape[:2] == (height, width):
        return image.copy()
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return _with_channels(cv2.resize(image, (width, height), interpolation=interpolation))


def box_blur(images: np.ndarray, kernel: int) -> np.ndarray:
    """Mean over a kernel×kernel window of each image of an N×H×W×C batch (borders reflected, 101).

    One OpenCV call per image into a preallocated output: measured faster than folding the batch
    into the channel axis, which OpenCV's vectorised box filter does not handle well.
    """
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = _with_channels(cv2.blur(image, (kernel, kernel)))
    return out


def hflip(images: np.ndarray) -> np.ndarray:
    """Mirror each image of an N×H×W×C batch left to right."""
    return images[:, :, ::-1].copy()


def vflip(images: np.ndarray) -> np.ndarray:
    """Turn each image of an N×H×W×C batch upside down."""
    return images[:, ::-1].copy()


@dataclass(frozen=True)
class Variant:
    """One augmented copy: a blur kernel (1 = none) then optional flips."""
    blur: int = 1
    flip: str = ""  # "", "h" or "v"

    @property
    def name(self) -> str:
        parts = ([f"blur{self.blur}"] if self.blur > 1 else []) + ([f"{self.flip}flip"] if self.flip else [])
        return "+".join(parts) or "original"

    def apply(self, images: np.ndarray) -> np.ndarray:
        out = box_blur(images, self.blur)
        if self.flip == "h":
            out = hflip(out)
        elif self.flip == "v":
            out = vflip(out)
        return out


def augmentation_variants(blur_kernels: tuple[int, ...], use_hflip: bool, use_vflip: bool) -> list[Variant]:
    """The original, one blurred copy per kernel, and each of those flipped when asked:
    (1 + len(blur_kernels)) × (1 + hflip + vflip) variants, the original first."""
    blurs = [1, *blur_kernels]
    flips = [""] + (["h"] if use_hflip else []) + (["v"] if use_vflip else [])
    return [Variant(blur, flip) for blur in blurs for flip in flips]


def augment_into(images: np.ndarray, variants: list[Variant], out: np.ndarray) -> None:
    """Write every variant of N×H×W×C `images` into `out` (N·len(variants) rows, image-major:
    row i·V + v is variant v of image i, so a block of sources fills a contiguous block of rows).

    OpenCV writes each result straight into its output row (`dst=`): no temporary per image, and
    a flip is taken from the blurred row already written, so each blur is computed once.
    Equal, row for row, to `variant.apply(images)`.
    """
    n_variants = len(variants)
    if out.shape != (len(images) * n_variants, *images.shape[1:]):
        raise ValueError(f"out has shape {out.shape}, expected {(len(images) * n_variants, *images.shape[1:])}")
    # Plan once: what each variant row is made from (frozen-dataclass lookups per image are slow).
    row_of = {variant: v for v, variant in enumerate(variants)}
    plan = [(variant, row_of.get(Variant(variant.blur)), {"h": 1, "v": 0}.get(variant.flip)) for variant in variants]
    for i, image in enumerate(images):
        rows = out[i * n_variants:(i + 1) * n_variants]
        for v, (variant, unflipped, flip_code) in enumerate(plan):
            if flip_code is not None and unflipped is not None:
                cv2.flip(rows[unflipped], flip_code, dst=rows[v])
            elif flip_code is not None:
                rows[v] = variant.apply(image[None])[0]
            elif variant.blur > 1:
                cv2.blur(image, (variant.blur, variant.blur), dst=rows[v])
            else:
                rows[v] = image
