"""prepare's normalisation statistics: measured on train only, standard or min-max."""
from __future__ import annotations

import numpy as np
import pytest

from stages.prepare import channel_stats, normalization


def test_channel_stats_match_numpy_in_chunks() -> None:
    images = np.random.default_rng(0).integers(10, 240, (37, 5, 6, 3), dtype=np.uint8)
    stats = channel_stats(images, chunk=8)
    pixels = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(stats["mean"], pixels.mean(axis=0))
    np.testing.assert_allclose(stats["std"], pixels.std(axis=0))
    np.testing.assert_allclose(stats["min"], pixels.min(axis=0))
    np.testing.assert_allclose(stats["max"], pixels.max(axis=0))


def test_minmax_maps_the_train_range_onto_0_to_1() -> None:
    images = np.array([50, 100, 250], dtype=np.uint8).reshape(3, 1, 1, 1)
    norm = normalization(channel_stats(images), "minmax")
    x = images.reshape(-1) / 255.0
    np.testing.assert_allclose((x - norm["mean"][0]) / norm["std"][0], [0.0, 0.25, 1.0])


def test_standard_gives_zero_mean_unit_std_and_never_divides_by_zero() -> None:
    images = np.random.default_rng(1).integers(0, 256, (20, 4, 4, 1), dtype=np.uint8)
    norm = normalization(channel_stats(images), "standard")
    z = (images / 255.0 - norm["mean"][0]) / norm["std"][0]
    assert abs(z.mean()) < 1e-9 and z.std() == pytest.approx(1.0)
    blank = normalization(channel_stats(np.zeros((3, 2, 2, 1), np.uint8)), "standard")
    assert blank["std"] == [1e-6]
