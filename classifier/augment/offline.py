"""The offline augmentation plan of the augment stage: box blurs, flips, rotations and noise of the
train images, block by block. Pure array functions on uint8 N×H×W×C; used by augment only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from classifier.data.opencv import cv2


def _with_channels(image: np.ndarray) -> np.ndarray:
    return image[:, :, None] if image.ndim == 2 else image


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate H×W×C about its centre, counter-clockwise; corners are filled by mirroring the
    border (reflect 101) so that no black wedge appears."""
    image = _with_channels(image)
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    return _with_channels(cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REFLECT_101))


def add_noise(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 images plus Gaussian noise of `std` grey levels, rounded and clipped to 0..255."""
    noisy = images.astype(np.float32) + rng.normal(0.0, std, size=images.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


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


@dataclass(frozen=True)
class AugmentPlan:
    """What augment makes of each source image: every variant (blurs × flips, the original first),
    `clones` times over; each copy but the original then gets a random rotation in ±`rotation`
    degrees and Gaussian noise of `noise_std` grey levels (0 = none)."""
    variants: tuple[Variant, ...]
    clones: int = 1
    rotation: float = 0.0
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if not self.variants or self.variants[0] != Variant():
            raise ValueError("the first variant must be the original")

    @property
    def copies(self) -> int:
        """Rows per augmented source image."""
        return len(self.variants) * self.clones

    def copy_name(self, copy: int) -> str:
        """'blur3+hflip', or 'blur3+hflip#2' for the second clone."""
        clone, v = divmod(copy, len(self.variants))
        return self.variants[v].name + (f"#{clone + 1}" if clone else "")


@dataclass(frozen=True)
class AugmentedBlock:
    images: np.ndarray   # M×H×W×C, grouped by source: all rows of source 0, then of source 1, ...
    source: np.ndarray   # M: the row's source image, as an offset into the block
    copy: np.ndarray     # M: which copy (0 = the original; see AugmentPlan.copy_name)
    angle: np.ndarray    # M: degrees of the random rotation applied (0 = none)


def augment_block(images: np.ndarray, augmented: np.ndarray, plan: AugmentPlan, rng: np.random.Generator,
                  buffer: np.ndarray | None = None) -> AugmentedBlock:
    """Augment a block of N×H×W×C sources: plan.copies rows for each source where `augmented`
    is true, the original alone where it is false. `buffer` (N·len(variants) rows) is reused for
    the deterministic variants when given; in the common case (every class, one clone, no random
    perturbation) the result is that buffer itself, with no further copy."""
    n, n_variants = len(images), len(plan.variants)
    base = buffer[:n * n_variants] if buffer is not None else np.empty((n * n_variants, *images.shape[1:]), np.uint8)
    augment_into(images, list(plan.variants), base)
    if plan.clones == 1 and augmented.all():
        rows, source = base, np.repeat(np.arange(n), n_variants)
        copy = np.tile(np.arange(n_variants), n)
    else:
        per_source = [np.tile(np.arange(i * n_variants, (i + 1) * n_variants), plan.clones) if augmented[i]
                      else np.array([i * n_variants]) for i in range(n)]
        gather = np.concatenate(per_source)
        rows, source = base[gather], gather // n_variants
        copy = np.concatenate([np.arange(plan.copies) if augmented[i] else np.zeros(1, int) for i in range(n)])
    angle = np.zeros(len(rows))
    perturbed = copy != 0
    if plan.rotation > 0:
        angle[perturbed] = rng.uniform(-plan.rotation, plan.rotation, size=int(perturbed.sum()))
        for m in np.flatnonzero(perturbed):
            rows[m] = rotate(rows[m], angle[m])
    if plan.noise_std > 0 and perturbed.any():
        rows[perturbed] = add_noise(rows[perturbed], plan.noise_std, rng)
    return AugmentedBlock(rows, source, copy, angle)
