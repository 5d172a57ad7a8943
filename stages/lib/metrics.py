"""Scores and plots computed from predictions: accuracy, per-class precision/recall/F1,
confusion matrices (as DVC plot data and as PNG heatmaps) and learning curves.

Metric key names are stable, flat within a split, so `dvc exp show` and `dvc metrics diff`
show them as columns such as `test.accuracy` or `val.f1_macro`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> tuple[dict, pd.DataFrame]:
    """Summary scores (accuracy, macro and support-weighted precision/recall/F1) and a per-class
    table (class, accuracy, precision, recall, f1, support), one row per class in class-id order.
    A class's accuracy is the share of its images predicted right (its recall).

    A class never predicted has precision 0 (not NaN), so JSON and `dvc metrics diff` stay valid.
    """
    labels = np.arange(len(class_names))
    from sklearn.metrics import precision_recall_fscore_support  # here: augment's plots need no sklearn (1 s)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0)
    weights = support / max(support.sum(), 1)
    summary = {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
        "precision_weighted": float(np.sum(precision * weights)),
        "recall_weighted": float(np.sum(recall * weights)),
        "f1_weighted": float(np.sum(f1 * weights)),
    }
    per_class = pd.DataFrame({"class": class_names, "accuracy": recall, "precision": precision, "recall": recall,
                              "f1": f1, "support": support.astype(int)})
    return summary, per_class


def top_k_accuracy(scores: np.ndarray, y_true: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the `k` highest scores (k capped at the class count)."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean((top == y_true[:, None]).any(axis=1))) if len(y_true) else 0.0


def top_k_scores(scores: np.ndarray, y_true: np.ndarray, k: int) -> dict[str, float]:
    """{"top_k_accuracy": ...} when k is below the class count; {} when every class would count
    (a two-class task's "top-3 100%" says nothing)."""
    return {"top_k_accuracy": top_k_accuracy(scores, y_true, k)} if k < scores.shape[1] else {}


def per_class_json(table: pd.DataFrame) -> dict:
    """{class: {accuracy, precision, recall, f1, support}} from classification_report's table."""
    return {str(row["class"]): {"accuracy": float(row["accuracy"]), "precision": float(row["precision"]),
                                "recall": float(row["recall"]), "f1": float(row["f1"]), "support": int(row["support"])}
            for _, row in table.iterrows()}


def predictions_table(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per sample, `actual` and `predicted` class names: what DVC's confusion template reads."""
    names = np.asarray(class_names, dtype=object)
    return pd.DataFrame({"actual": names[y_true], "predicted": names[y_pred]})


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_class_counts(counts: pd.DataFrame, path: Path) -> None:
    """Grouped horizontal bars: images per class in each column of `counts` but `class`."""
    plt = _pyplot()
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_image_grid(rows: list[list[np.ndarray]], titles: list[list[str]], path: Path, empty: str = "no images") -> None:
    """One row of uint8 H×W×C images per entry of `rows`, each titled; `empty` written when there are none."""
    plt = _pyplot()
    if not any(rows):
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, empty, ha="center", va="center")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.6 * n_cols, 1.8 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (images, names) in enumerate(zip(rows, titles)):
        for c, (image, name) in enumerate(zip(images, names)):
            grey = image.shape[2] == 1
            axes[r, c].imshow(image[:, :, 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=255)
            axes[r, c].set_title(name, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], title: str, path: Path) -> None:
    """Heatmap of the row-normalised confusion matrix (share of each true class), counts in the cells."""
    plt = _pyplot()
    from sklearn.metrics import confusion_matrix
    counts = confusion_matrix(y_true, y_pred, labels=np.arange(len(class_names)))
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


def plot_learning_curves(history: pd.DataFrame, path: Path) -> None:
    """Loss and accuracy per epoch, train and validation side by side."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "-o"), ("val", "-s")):
        loss_ax.plot(history["epoch"], history[f"{split}_loss"], style, label=split, markersize=3)
        acc_ax.plot(history["epoch"], history[f"{split}_accuracy"], style, label=split, markersize=3)
    loss_ax.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
