"""Stage augment: the train split, plus blurred, flipped, rotated and noisy copies. Val and test
images are never read (only their label counts, for metrics/data.json).

    python -m stages.augment

Writes data/augmented/train/ (images.npy, labels.npy, index.csv): each prepared train image
followed by its copies: every variant (the original, each blur kernel, each flip of the original
and of every blur), `clones` times over, each copy but the original rotated and noised at random
when asked. Rows per augmented image: (1 + len(blur_kernels)) × (1 + hflip + vflip) × clones;
a class outside `augment.classes` (when that is not empty) keeps its originals only. The output
is streamed to disk block by block: memory stays flat whatever the data set's size.

index.csv names each row's source file, augmentation and rotation: that is how the tests prove
that no val or test image leaks into training. Also writes metrics/data.json (image counts per
split), plots/data/class_counts.{csv,png} and plots/data/augment_preview.png (a few train images
and their copies, to see at a glance what a blur of 9 does to them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from classifier.runtime import paths
from classifier.data.artifacts import finish_array_set, load_array_set, read_json
from classifier.augment.offline import AugmentPlan, AugmentedBlock, augment_block, augmentation_variants
from classifier.runtime.errors import PipelineError, run_stage
from classifier.data.image_files import decode_image
from classifier.runtime.outputs import staged_outputs, write_json
from classifier.params.augment import AugmentParams
from classifier.params.checks import load_sections
from classifier.evaluation.plotting import DPI, first_of_each_class, plot_image_grid, pyplot
from classifier.data.shards import RawImages
from classifier.runtime.stale_summary import retire_summary

PARAMS = (AugmentParams,)  # augment.online*: train's (OnlineAugmentParams), applied batch by batch
DEPS = (paths.PREPARED_DIR, paths.SPLIT_DIR, paths.RAW_DIR)  # raw: the preview's first column, ingest.json
OUTS = (paths.AUGMENTED_DIR, paths.DATA_METRICS, paths.DATA_PLOTS)
CHUNK = 256  # source images per block; also fixes the random stream of each block (seed, block start)


def plan_from(params: AugmentParams) -> AugmentPlan:
    variants = augmentation_variants(params.blur_kernels, params.hflip, params.vflip)
    return AugmentPlan(tuple(variants), params.clones, params.rotation, params.noise_std)


def augmented_mask(labels: np.ndarray, classes: list[str], only: tuple[str, ...]) -> np.ndarray:
    """Which source images get copies: all, or those of the classes in `augment.classes`."""
    if not only:
        return np.ones(len(labels), dtype=bool)
    unknown = sorted(set(only) - set(classes))
    if unknown:
        raise PipelineError(f"The 'augment.classes' parameter names unknown class(es) {', '.join(unknown)}; "
                            f"classes: {', '.join(classes)}")
    return np.isin(labels, [classes.index(name) for name in only])


def write_augmented(images: np.ndarray, augmented: np.ndarray, plan: AugmentPlan, seed: int, path: Path,
                    on_block=None) -> None:
    """Augment `images` block by block and stream the rows into the .npy file `path`.

    `on_block(start, block)` sees each AugmentedBlock (its sources offset by `start`) to build the
    index. Each block draws from its own generator seeded with (seed, start): same seed, same bytes.
    """
    rows = int(np.where(augmented, plan.copies, 1).sum())
    buffer = np.empty((min(CHUNK, max(len(images), 1)) * len(plan.variants), *images.shape[1:]), dtype=np.uint8)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (rows, *images.shape[1:])})
        for start in range(0, len(images), CHUNK):
            block = augment_block(np.asarray(images[start:start + CHUNK]), augmented[start:start + CHUNK], plan,
                                  np.random.default_rng([seed, start]), buffer)
            f.write(np.ascontiguousarray(block.images).data)
            if on_block is not None:
                on_block(start, block)


def copy_title(augmentation: str, rotation: float, noise_std: float) -> str:
    """Every transform a row went through: 'blur5+hflip', then its rotation and noise on a second line."""
    extras = [f"rot {rotation:+.1f}°"] if rotation else []
    extras += [f"noise σ{noise_std:g}"] if noise_std and augmentation != "original" else []
    return augmentation + ("\n" + " ".join(extras) if extras else "")


PREVIEW_ROWS, PREVIEW_COPIES = 20, 12  # classes shown, copies shown of each


def preview(images: np.ndarray, labels: np.ndarray, index: pd.DataFrame, classes: list[str], noise_std: float,
            path: Path, read_raw: Callable[[str], np.ndarray]) -> None:
    """The first train image of every class (up to PREVIEW_ROWS, one row each): the file as ingested,
    then as prepared (grey, trimmed, inverted, resized: the prepare params) and its copies (up to
    PREVIEW_COPIES), each titled with the transforms it went through."""
    firsts = first_of_each_class(labels, len(classes), most=PREVIEW_ROWS)
    grid, titles = [], []
    for row in firsts:
        source = index["source"].iloc[row]
        copies = np.flatnonzero((index["source"] == source).to_numpy())[:PREVIEW_COPIES]
        grid.append([read_raw(source), *(images[i] for i in copies)])
        titles.append([f"{classes[labels[row]]}: raw file", *(
            f"{classes[labels[i]]}: {copy_title(index['augmentation'].iloc[i], float(index['rotation'].iloc[i]), noise_std)}"
            for i in copies)])
    plot_image_grid(grid, titles, path, title="train images as ingested, as prepared (original) and their copies")


def class_counts(classes: list[str], augmented_labels: np.ndarray) -> pd.DataFrame:
    """Images per class and split (labels only: val and test images are not read)."""
    counts = pd.DataFrame({"class": classes})
    for split in paths.SPLITS:
        counts[split] = np.bincount(np.load(paths.PREPARED_DIR / split / "labels.npy"), minlength=len(classes))
    counts["train_augmented"] = np.bincount(augmented_labels, minlength=len(classes))
    return counts


def plot_class_counts(counts: pd.DataFrame, path: Path) -> None:
    """Grouped horizontal bars: images per class in each column of `counts` but `class`."""
    plt = pyplot()
    columns = [c for c in counts.columns if c != "class"]
    n = len(counts)
    fig, ax = plt.subplots(figsize=(8, min(2 + 0.3 * n * max(1, len(columns) / 2), 40)))
    height = 0.8 / len(columns)
    for k, column in enumerate(columns):
        ax.barh(np.arange(n) + k * height, counts[column], height=height, label=column)
    ax.set_yticks(np.arange(n) + 0.4 - height / 2, counts["class"])
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title("images per class")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main() -> None:
    params = load_sections(*PARAMS).augment
    retire_summary()  # the scores of the last run no longer describe this data
    classes = read_json(paths.CLASSES_FILE)
    source = load_array_set(paths.PREPARED_DIR / "train")
    plan = plan_from(params)
    augmented = augmented_mask(source.labels, classes, params.classes)
    index_parts: list[pd.DataFrame] = []
    label_parts: list[np.ndarray] = []

    def collect(start: int, block: AugmentedBlock) -> None:
        rows = source.index.iloc[start + block.source].reset_index(drop=True)
        index_parts.append(rows.assign(augmentation=[plan.copy_name(c) for c in block.copy],
                                       rotation=np.round(block.angle, 3)))
        label_parts.append(source.labels[start + block.source])

    ingested = read_json(paths.INGEST_REPORT)
    raw = RawImages(paths.RAW_DIR)

    def read_raw(key: str) -> np.ndarray:
        return decode_image(raw.bytes(key), key)
    # Every output is written before any is switched in: a failure while writing leaves the last run's, all of them.
    with staged_outputs(files=(paths.DATA_METRICS,), dirs=(paths.AUGMENTED_DIR, paths.DATA_PLOTS)) as out:
        folder = out[paths.AUGMENTED_DIR] / "train"
        folder.mkdir()
        write_augmented(source.images, augmented, plan, params.seed, folder / "images.npy", collect)
        index, labels = pd.concat(index_parts, ignore_index=True), np.concatenate(label_parts)
        finish_array_set(folder, labels, index)
        counts = class_counts(classes, labels)
        plots = out[paths.DATA_PLOTS]
        counts.to_csv(plots / "class_counts.csv", index=False)
        plot_class_counts(counts, plots / "class_counts.png")
        preview(np.load(folder / "images.npy", mmap_mode="r"), labels, index, classes, plan.noise_std,
                plots / "augment_preview.png", read_raw)
        write_json(out[paths.DATA_METRICS], {
            "classes": len(classes),
            "images": {column: int(counts[column].sum()) for column in (*paths.SPLITS, "train_augmented")},
            # Found by ingest (data/raw/ingest.json lists them): same pixels, and resized or re-encoded copies.
            "duplicates": len(ingested.get("duplicates", [])),
            "near_duplicates": len(ingested.get("near_duplicates", [])),
        })
    extras = [f"× {plan.clones} clones"] if plan.clones > 1 else []
    extras += [f"rotation ±{plan.rotation:g}°"] if plan.rotation else []
    extras += [f"noise σ {plan.noise_std:g}"] if plan.noise_std else []
    extras += [f"classes {', '.join(params.classes)} only"] if params.classes else []
    print(f"augment: {len(source.labels)} train images -> {len(labels)} rows "
          f"({', '.join(v.name for v in plan.variants)}{'; ' if extras else ''}{'; '.join(extras)})")


if __name__ == "__main__":
    run_stage(main)
