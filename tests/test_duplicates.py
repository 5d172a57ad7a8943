"""Near-duplicate search: the same pairs as comparing every pair, without comparing every pair."""
from __future__ import annotations

import numpy as np
import pytest

from classifier.data import duplicates
from classifier.data.duplicates import near_duplicates, thumbnail


def every_pair(thumbs: np.ndarray, max_rms: float = 2.0) -> list[tuple[int, int]]:
    """The old search, the oracle: each image against every one before it."""
    limit = max_rms ** 2 * thumbs.shape[1]
    pairs = []
    for later in range(len(thumbs)):
        distances = ((thumbs[:later].astype(np.float64) - thumbs[later]) ** 2).sum(1)
        hits = np.flatnonzero(distances <= limit)
        if hits.size:
            pairs.append((int(hits[0]), later))
    return pairs


def pictures_with_copies(n: int, copies: int, seed: int, noise: float) -> np.ndarray:
    """n random pictures and `copies` noisy copies of some of them, shuffled, as thumbnails."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (n, 256)).astype(np.float32)
    smooth = (base.reshape(n, 16, 16).cumsum(1) / np.arange(1, 17)[None, :, None]).reshape(n, 256)  # some structure
    picked = rng.integers(0, n, copies)
    noisy = smooth[picked] + rng.normal(0, noise, (copies, 256)).astype(np.float32)
    thumbs = np.concatenate([smooth, noisy]).astype(np.float32)
    return thumbs[rng.permutation(len(thumbs))]


@pytest.mark.parametrize("noise", [0.5, 1.9, 3.0])  # well inside, at the edge of, and beyond 2 grey levels
def test_the_same_pairs_as_comparing_every_pair(noise) -> None:
    thumbs = pictures_with_copies(600, 300, seed=int(noise * 10), noise=noise)
    expected = every_pair(thumbs)
    assert near_duplicates(thumbs) == expected
    if noise < 1:
        assert len(expected) >= 300  # every copy found


def test_a_near_duplicate_across_a_cell_border_is_found() -> None:
    """Two thumbnails 1.5 grey levels apart whose projections sit on either side of a cell edge."""
    a = np.full(256, 10.0 * 1.001 * 2 - 0.5, np.float32)  # just below a cell border of the mean
    b = a + 1.5
    assert near_duplicates(np.stack([a, b])) == [(0, 1)]


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_only_neighbouring_cells_are_compared() -> None:
    """Distinct pictures spread over cells: far fewer distances computed than all pairs."""
    thumbs = pictures_with_copies(3000, 30, seed=1, noise=0.5)
    thumbs = thumbs * np.linspace(0.05, 1, len(thumbs), dtype=np.float32)[np.random.default_rng(2).permutation(len(thumbs)), None]
    counts: dict[str, int] = {}
    assert near_duplicates(thumbs, counts=counts) == every_pair(thumbs)
    assert 0 < counts["compared"] < len(thumbs) ** 2 / 20


def test_thumbnails_of_a_resized_copy_are_near() -> None:
    rng = np.random.default_rng(0)
    image = (rng.uniform(0, 255, (8, 8, 1)).repeat(8, 0).repeat(8, 1)).astype(np.uint8)
    bigger = image.repeat(2, 0).repeat(2, 1)
    assert near_duplicates(np.stack([thumbnail(image), thumbnail(bigger)])) == [(0, 1)]
    assert duplicates.SIDE ** 2 == thumbnail(image).size


def test_chunking_changes_nothing_with_many_copies_of_one_picture() -> None:
    """Many copies: an image matches earlier ones in several chunks; the first match still wins."""
    thumbs = pictures_with_copies(50, 200, seed=3, noise=0.3)
    assert near_duplicates(thumbs, chunk=3) == near_duplicates(thumbs) == every_pair(thumbs)
