"""evaluate's charts: confusion matrices, learning curves, weight histograms (PNG files that
`dvc plots` shows beside its interactive plots). Used by evaluate only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from classifier.evaluation.plotting import DPI, pyplot
from classifier.evaluation.scores import confusion_counts


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], title: str, path: Path) -> None:
    """Heatmap of the row-normalised confusion matrix (share of each true class), counts in the cells."""
    plt = pyplot()
    counts = confusion_counts(y_true, y_pred, len(class_names))
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    side = min(max(4.0, 0.5 * n + 2), 24)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 12 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    if n <= 30:  # past that the numbers no longer fit in the cells
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if shares[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_learning_curves(history: pd.DataFrame, path: Path, saved_epoch: int | None = None) -> None:
    """Loss and accuracy per epoch, train and validation side by side; a dashed line at the epoch
    models/model.pt holds and, for a two-phase run (history's `phase` column), a dotted one where
    fine-tuning began."""
    plt = pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "-o"), ("val", "-s")):
        loss_ax.plot(history["epoch"], history[f"{split}_loss"], style, label=split, markersize=3)
        acc_ax.plot(history["epoch"], history[f"{split}_accuracy"], style, label=split, markersize=3)
    loss_ax.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="accuracy", xlabel="epoch", ylabel="accuracy")
    finetune = history["epoch"][history["phase"] == "finetune"] if "phase" in history else []
    for ax in (loss_ax, acc_ax):
        if len(finetune):
            ax.axvline(finetune.iloc[0] - 0.5, color="tab:purple", linestyle=":", label="fine-tuning starts")
        if saved_epoch is not None:
            ax.axvline(saved_epoch, color="tab:green", linestyle="--", label=f"saved epoch ({saved_epoch})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_weight_histograms(layers: list[tuple[str, "object"]], path: Path, bins: int = 50, most: int = 12) -> None:
    """One histogram per layer's weights (name, shape and spread in each title): dead, exploding or
    never-trained layers show at a glance. A deep network shows `most` layers, evenly spread from
    the first to the last."""
    plt = pyplot()
    total = len(layers)
    if total > most:
        layers = [layers[round(i * (total - 1) / (most - 1))] for i in range(most)]
    n = max(len(layers), 1)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, weight) in zip(axes.flat, layers):
        values = np.asarray(weight).ravel()
        ax.axis("on")
        ax.hist(values, bins=bins, color="tab:blue")
        ax.set_title(f"{name}: {'×'.join(map(str, np.asarray(weight).shape))}\nstd {values.std():.3g}", fontsize=8)
        ax.set_xlabel("weight value", fontsize=8)
        ax.set_ylabel("weights", fontsize=8)
        ax.tick_params(labelsize=7)
    shown = f"{len(layers)} of its {total} layers" if total > len(layers) else "each layer"
    fig.suptitle(f"weights of {shown} (saved model; conv: out×in×k×k, dense: out×in)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_reliability(curves: dict[str, tuple[pd.DataFrame, float]], path: Path) -> None:
    """The reliability diagram: accuracy against confidence per bin (reliability_bins' rows), one
    line per entry of `curves` (label -> (bins, ECE)), the diagonal a perfectly calibrated model
    follows; below, how many images each bin holds."""
    plt = pyplot()
    fig, (ax, counts_ax) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for (label, (table, ece)), marker in zip(curves.items(), "osd^v"):
        line, = ax.plot(table["confidence"], table["accuracy"], f"-{marker}", markersize=4,
                        label=f"{label} (ECE {ece:.3f})")
        counts_ax.plot(table["confidence"], table["images"], f"-{marker}", markersize=3, color=line.get_color())
    ax.set(title="reliability: is the model as sure as it is right?", ylabel="accuracy in the bin", xlim=(0, 1.02),
           ylim=(0, 1.02))
    counts_ax.set(xlabel="confidence (the top class's probability), bins of 1/15", ylabel="images")
    counts_ax.set_yscale("log")
    for axis in (ax, counts_ax):
        axis.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
