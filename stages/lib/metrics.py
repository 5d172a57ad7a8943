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
    counts = confusion_counts(y_true, y_pred, len(class_names))
    right = np.diag(counts).astype(np.float64)
    support, predicted = counts.sum(axis=1), counts.sum(axis=0)
    precision = np.divide(right, predicted, out=np.zeros_like(right), where=predicted > 0)
    recall = np.divide(right, support, out=np.zeros_like(right), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(right), where=both > 0)
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


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j]: images of class i predicted as class j."""
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


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


DPI = 100
CELL_PX = 128        # each image of a grid is drawn this many pixels on its longer side
CAPTION_PX = 30      # two lines of captions under the cell's top
TITLE_PX = 30


def plot_image_grid(rows: list[list[np.ndarray]], titles: list[list[str]], path: Path, empty: str = "no images",
                    title: str = "") -> None:
    """One row of uint8 H×W×C images per entry of `rows`, each captioned, under `title`; `empty` is
    written when there are none. Each image is drawn CELL_PX (128) px on its longer side, pixels
    kept sharp, however few there are. One canvas under one set of axes: a grid of 40 images
    draws in a tenth of the time of 40 matplotlib axes."""
    import cv2
    plt = _pyplot()
    if not any(rows):
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: {empty}" if title else empty, ha="center", va="center")
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        return
    n_cols = max(max(len(r) for r in rows), 3)  # room for the title over a row of one or two
    cell_w, cell_h, top = CELL_PX + 12, CELL_PX + CAPTION_PX + 8, TITLE_PX if title else 6
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
        ax.text(canvas.shape[1] / 2, TITLE_PX - 8, title, ha="center", va="bottom", fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], title: str, path: Path) -> None:
    """Heatmap of the row-normalised confusion matrix (share of each true class), counts in the cells."""
    plt = _pyplot()
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
    plt = _pyplot()
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


def comparison_metrics(scores: dict) -> dict:
    """The handful of numbers that compare runs, under names short enough that `dvc exp show
    --only-changed` fits a terminal beside the changed params and the model's hash: test accuracy,
    val accuracy, the test split's macro F1 and loss, rounded to 4 decimals (the training time is
    metrics/time.json's). The rest (bias, variance, top-k, best epoch, every split's scores) is in
    metrics/eval.json and metrics/train.json, at full precision."""
    test = scores["test"]
    summary = {"test_acc": test["accuracy"], "val_acc": scores["val"]["accuracy"], "f1": test["f1_macro"],
               "loss": test["loss"]}
    return {key: round(float(value), 4) for key, value in summary.items()}


def summary_block(scores: dict, record: dict, health: list[str], top_k: int) -> str:
    """The lines closing `dvc repro`: test accuracy, macro F1 and the health verdict, and where to look next."""
    test = scores["test"]
    top = f", top-{top_k} {test['top_k_accuracy']:.2%}" if "top_k_accuracy" in test else ""
    verdict = (f"{len(health)} problem{'s' if len(health) > 1 else ''}: {', '.join(health)} (the health lines above)"
               if health else "healthy: no collapse, divergence, loss spike, overfitting or underfitting")
    rule = "─" * 72
    return "\n".join([
        rule,
        f"test accuracy  {test['accuracy']:.2%}  (val {scores['val']['accuracy']:.2%}{top}; best epoch "
        f"{record['best_epoch']})",
        f"macro F1       {test['f1_macro']:.4f}",
        f"health         {verdict}",
        "compare runs   dvc exp show --only-changed --drop '^(data|models|stages)/|Created'",
        "detail         dvc metrics show metrics/eval.json    per class: python -m stages.report --per-class",
        rule,
    ])


def plot_weight_histograms(layers: list[tuple[str, "object"]], path: Path, bins: int = 50, most: int = 12) -> None:
    """One histogram per layer's weights (name, shape and spread in each title): dead, exploding or
    never-trained layers show at a glance. A deep network shows `most` layers, evenly spread from
    the first to the last."""
    plt = _pyplot()
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
