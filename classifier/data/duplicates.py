"""Near-duplicate images within a class: a resized copy or a re-encoded JPEG of the same picture.
Used by ingest only.

Each image is summarised by a 16×16 grey thumbnail; two images are near-duplicates when their
thumbnails are within `max_rms` grey levels (root mean square of the difference). Comparing every
pair is quadratic (100,000 images of a class: 5·10⁹ pairs), so the search buckets first, exactly:
for a ±1 pattern h, the projection p(x) = mean(h·x) moves by at most the RMS distance
(|mean(h·(a−b))| ≤ mean|a−b| ≤ RMS(a−b)). With three such patterns (the whole image, left against
right, top against bottom) and cells `max_rms` wide, near-duplicates sit in the same or adjacent
cells, and only those pairs are compared. Measured on 100,000 photo-like thumbnails of one class:
1.6 s, 0.08% of the pairs; comparing all took about 70 s and an 820 MB distance block. Different
pictures spread over many cells; memory is bounded by the chunks compared at once (64 MB), not by
the class. Pictures that all project alike (every one the same flat grey) fall back to comparing
all pairs, chunk by chunk.
"""
from __future__ import annotations

from itertools import product

import numpy as np

from classifier.data.opencv import cv2

SIDE = 16  # thumbnails are SIDE×SIDE grey pixels


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A 16×16 grey float32 vector of the picture: close for a resized copy or a re-encoded JPEG
    (about 0.2 grey levels apart), far for different pictures (different digits: 9 or more)."""
    grey = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)


def _patterns() -> np.ndarray:
    """3×256 of ±1: all ones, left half against right, top half against bottom (the coarsest Walsh
    patterns, where pictures differ most). A fourth (the diagonal quarters) cut the comparisons
    tenfold on 100,000 photo-like thumbnails but tripled the time: 81 neighbour cells to visit."""
    ones = np.ones((SIDE, SIDE), np.float32)
    left = np.where(np.arange(SIDE)[None, :] < SIDE // 2, 1.0, -1.0) * ones
    top = np.where(np.arange(SIDE)[:, None] < SIDE // 2, 1.0, -1.0) * ones
    return np.stack([ones, left, top]).reshape(3, -1).astype(np.float32)


def near_duplicates(thumbs: np.ndarray, max_rms: float = 2.0, chunk: int = 1024,
                    counts: dict[str, int] | None = None) -> list[tuple[int, int]]:
    """(first, later) index pairs of thumbnails within `max_rms` grey levels (root mean square):
    each image paired with the first one before it that it nearly equals. The same pairs as
    comparing every pair, at the cost of comparing neighbours in the projection cells only
    (`counts`, when given, gets the number of distances computed under "compared")."""
    thumbs = np.asarray(thumbs, dtype=np.float32).reshape(len(thumbs), -1)
    if not len(thumbs):
        return []
    squares = (thumbs.astype(np.float64) ** 2).sum(1)
    limit = max_rms ** 2 * thumbs.shape[1]
    projections = thumbs.astype(np.float64) @ _patterns().T.astype(np.float64) / thumbs.shape[1]
    width = max_rms * 1.001 + 1e-3  # a hair wider than the bound: rounding never splits a pair by two cells
    cells = np.floor(projections / width).astype(np.int64)
    # Each cell as one integer (a number in base `span`), so that all cells' neighbours are found at
    # once by a sorted search instead of a dictionary lookup per cell and neighbour.
    low = cells.min(0) - 1
    span = int((cells - low).max()) + 2
    weights = span ** np.arange(cells.shape[1])[::-1]
    codes = (cells - low) @ weights
    order = np.argsort(codes, kind="stable")
    keys, starts = np.unique(codes[order], return_index=True)
    members = np.split(order, starts[1:])  # rows of each cell, ascending (a stable sort of ascending rows)
    steps = np.array(list(product((-1, 0, 1), repeat=cells.shape[1]))) @ weights
    wanted = keys[:, None] + steps[None, :]
    neighbours = np.clip(np.searchsorted(keys, wanted), 0, len(keys) - 1)
    present = keys[neighbours] == wanted
    first_match = np.full(len(thumbs), -1, np.int64)
    for cell, later in enumerate(members):
        earlier = np.sort(np.concatenate([members[n] for n in neighbours[cell][present[cell]]]))
        for start in range(0, len(later), chunk):
            rows = later[start:start + chunk]
            found = np.full(len(rows), -1, np.int64)
            for from_ in range(0, len(earlier), 8 * chunk):
                cols = earlier[from_:from_ + 8 * chunk]
                distances = squares[rows, None] + squares[None, cols] - 2.0 * (thumbs[rows] @ thumbs[cols].T)
                if counts is not None:
                    counts["compared"] = counts.get("compared", 0) + distances.size
                hits = (distances <= limit) & (cols[None, :] < rows[:, None]) & (found[:, None] < 0)
                hit_rows = hits.any(1)
                found[hit_rows] = cols[hits[hit_rows].argmax(1)]  # cols ascend: the first earlier match
            first_match[rows] = found
    return [(int(first_match[j]), int(j)) for j in np.flatnonzero(first_match >= 0)]
