"""Figures shared by augment (its preview), evaluate (galleries, filters, feature maps) and
lr_find: matplotlib without a display, and grids of images drawn on one canvas.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


DPI = 100


CELL_PX = 128        # each image of a grid is drawn this many pixels on its longer side
CAPTION_PX = 30      # two lines of captions under the cell's top
TITLE_LINE_PX = 16   # a line of the 10-point title
TITLE_CHAR_PX = 7.5  # the 10-point title's widest average character: wrap before the canvas's edge


def rows_of(items: list, width: int = 8) -> list[list]:
    """`items` cut into a grid's rows of `width`."""
    return [items[i:i + width] for i in range(0, len(items), width)]


def first_of_each_class(labels: np.ndarray, num_classes: int, most: int) -> list[int]:
    """The row of each class's first image, in class order (a class with none is left out), at most `most`."""
    return [int(np.flatnonzero(labels == c)[0]) for c in range(num_classes) if (labels == c).any()][:most]


def plot_image_grid(rows: list[list[np.ndarray]], titles: list[list[str]], path: Path, empty: str = "no images",
                    title: str = "") -> None:
    """One row of uint8 H×W×C images per entry of `rows`, each captioned, under `title`; `empty` is
    written when there are none. Each image is drawn CELL_PX (128) px on its longer side, pixels
    kept sharp, however few there are. One canvas under one set of axes: a grid of 40 images
    draws in a tenth of the time of 40 matplotlib axes."""
    from classifier.data.opencv import cv2
    plt = pyplot()
    if not any(rows):
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: {empty}" if title else empty, ha="center", va="center")
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        return
    n_cols = max(max(len(r) for r in rows), 3)  # room for the title over a row of one or two
    cell_w, cell_h = CELL_PX + 12, CELL_PX + CAPTION_PX + 8
    title_lines = textwrap.wrap(title, int((cell_w * n_cols - 12) / TITLE_CHAR_PX))
    top = 14 + TITLE_LINE_PX * len(title_lines) if title else 6
    canvas = np.full((top + cell_h * len(rows), cell_w * n_cols, 3), 255, np.uint8)
    captions = []
    for r, (images, names) in enumerate(zip(rows, titles)):
        for c, (image, name) in enumerate(zip(images, names)):
            height, width = image.shape[:2]
            scale = CELL_PX / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            shown = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_NEAREST)
            shown = np.repeat(shown[:, :, None], 3, axis=2) if shown.ndim == 2 else shown
            y = top + r * cell_h + CAPTION_PX + (CELL_PX - size[1]) // 2
            x = c * cell_w + 6 + (CELL_PX - size[0]) // 2
            canvas[y:y + size[1], x:x + size[0]] = shown[:, :, :3] if shown.shape[2] >= 3 else shown
            captions.append((c * cell_w + cell_w / 2, top + r * cell_h + CAPTION_PX - 3, name))
    fig = plt.figure(figsize=(canvas.shape[1] / DPI, canvas.shape[0] / DPI))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    for x, y, name in captions:
        ax.text(x, y, name, ha="center", va="bottom", fontsize=8)
    if title:
        ax.text(canvas.shape[1] / 2, top - 8, "\n".join(title_lines), ha="center", va="bottom", fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
