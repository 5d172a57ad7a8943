"""The preprocessing contract, in one place: what turns a decoded image into the model's input.

prepare measures it on the train split and writes it to data/prepared/stats.json; train copies it
into the checkpoint; evaluate and predict read it back from there. So predict applies exactly what
training applied: colour, size, resize mode, interpolation and padding (the prepare params, applied
by classifier/data/image_format.py's format_image), then the train split's per-channel normalisation
x' = (x / 255 - mean) / std:
    standard  mean and std of the train pixels
    minmax    min and max - min of the train pixels (they map onto 0..1)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from classifier.data.artifacts import read_json
from classifier.runtime.errors import PipelineError
from classifier.runtime.outputs import write_json
from classifier.params.checks import as_plain, parse_section
from classifier.params.prepare import PrepareParams

if TYPE_CHECKING:  # torch is imported where tensors are made: prepare, which never makes one, starts 2 s sooner
    import torch


STATS_CHUNK_BYTES = 16 * 2**20  # uint8 pixels counted at a time (a channel's copy of them, and its histogram)


def channel_stats(images: np.ndarray, chunk: int | None = None) -> dict[str, list[float]]:
    """Per-channel mean, std, min and max of uint8 N×H×W×C in [0, 1], in chunks of images (by
    default as many as STATS_CHUNK_BYTES hold: the array may be memory-mapped and larger than
    memory). Each channel's 256-bin histogram is counted exactly, and the sums come from it as
    Python integers, so stats.json has the same bytes on every CPU (a float sum's rounding depends on
    how the vector code adds it up). Counting took 0.1 s where summing int64 squares took 1.3 s
    (16,000 images of 32×32×3)."""
    channels = images.shape[3]
    chunk = chunk or max(1, STATS_CHUNK_BYTES // max(1, int(np.prod(images.shape[1:]))))
    counts = np.zeros((channels, 256), dtype=np.int64)
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start:start + chunk]).reshape(-1, channels)
        for channel in range(channels):
            counts[channel] += np.bincount(block[:, channel], minlength=256)
    values = range(256)
    total = [sum(int(n) * v for n, v in zip(row, values)) for row in counts]      # exact: Python ints
    total_sq = [sum(int(n) * v * v for n, v in zip(row, values)) for row in counts]
    seen = counts > 0  # the lowest and highest value with a count (255 and 0 for no images, as before)
    low = np.where(seen.any(1), seen.argmax(1), 255)
    high = np.where(seen.any(1), 255 - seen[:, ::-1].argmax(1), 0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = np.array([t / (count * 255) for t in total])
    std = np.sqrt(np.maximum(np.array([t / (count * 255 ** 2) for t in total_sq]) - mean ** 2, 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "min": (low / 255).tolist(), "max": (high / 255).tolist()}


class Normalizer:
    """uint8 N×C×H×W -> float32 (x / 255 - mean) / std per channel. The constants are made on the
    device once, so a training step copies nothing from the host."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu") -> None:
        import torch
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std_t), mean_t / std_t

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.float() * self.scale - self.shift


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RGB, what torchvision's weights saw


def imagenet_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's per-channel mean and std; for grey images (R = G = B) their averages."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (round(sum(IMAGENET_MEAN) / 3, 6),), (round(sum(IMAGENET_STD) / 3, 6),)


@dataclass(frozen=True)
class Preprocessing:
    image: PrepareParams          # colour, size, resize mode, interpolation, padding, normalisation mode
    mean: tuple[float, ...]       # per channel, pixel values in [0, 1]
    std: tuple[float, ...]        # per channel, > 0

    @classmethod
    def measure(cls, params: PrepareParams, train_images: np.ndarray) -> tuple[Preprocessing, dict]:
        """The contract for `params`, normalised by the prepared train images (or ImageNet's constants);
        also their raw stats. `auto` is measured as `standard` here; train swaps in the weights' own
        constants when it starts from pretrained weights (for_weights)."""
        stats = channel_stats(train_images)
        if params.normalize == "minmax":
            mean, std = stats["min"], [hi - lo for lo, hi in zip(stats["min"], stats["max"])]
        elif params.normalize == "imagenet":
            mean, std = imagenet_stats(train_images.shape[-1])
        else:
            mean, std = stats["mean"], stats["std"]
        # A blank channel (std 0) divides by 1e-6, not by zero.
        return cls(params, tuple(mean), tuple(max(s, 1e-6) for s in std)), stats

    def for_weights(self, weights_stats: tuple[tuple[float, ...], tuple[float, ...]] | None) -> Preprocessing:
        """prepare.normalize: auto follows the weights: the mean and std pretrained weights were trained
        with (`weights_stats`; ImageNet's for torchvision's), the train split's own without them (None).
        Train records the result in the checkpoint."""
        if self.image.normalize != "auto" or weights_stats is None:
            return self
        mean, std = weights_stats
        return dataclasses.replace(self, mean=tuple(mean), std=tuple(std))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """channels, height, width of the model's input."""
        return (1 if self.image.grayscale else 3, *self.image.image_size)

    def normalizer(self, device: torch.device | str = "cpu") -> Normalizer:
        return Normalizer(self.mean, self.std, device)

    def to_dict(self) -> dict:
        return {"image": as_plain(self.image), "mean": list(self.mean), "std": list(self.std)}

    def write(self, path: Path, train_pixels: dict) -> None:
        """data/prepared/stats.json: this contract and the train pixels' raw statistics."""
        write_json(path, {"preprocessing": self.to_dict(), "train_pixels": train_pixels})

    @classmethod
    def read(cls, path: Path) -> Preprocessing:
        return cls.from_dict(read_json(path)["preprocessing"], str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str) -> Preprocessing:
        """Read back to_dict's output; `source` (the file it came from) names the problem."""
        try:
            image = parse_section(PrepareParams, data["image"])
            mean, std = tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PipelineError(f"{source}: no valid preprocessing ({' '.join(str(exc).split())[:200]}): "
                                f"rerun `dvc repro`") from None
        channels = 1 if image.grayscale else 3
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise PipelineError(f"{source}: the normalisation does not fit {channels} channel(s): rerun `dvc repro`")
        return cls(image, mean, std)
