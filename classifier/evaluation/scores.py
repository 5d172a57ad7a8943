"""evaluate's numbers: per-class and macro/weighted precision, recall and F1, top-k accuracy, the
predictions table, the handful of metrics `dvc exp show` compares runs by, and the summary block.
Pure functions of labels and predictions; used by evaluate only.
"""
from __future__ import annotations

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


def predictions_table(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], keys: list[str]) -> pd.DataFrame:
    """One row per sample, `actual` and `predicted` class names (what DVC's confusion template reads) and
    the image's data/raw `key` (what `tools.report --errors` compares runs by)."""
    names = np.asarray(class_names, dtype=object)
    return pd.DataFrame({"actual": names[y_true], "predicted": names[y_pred], "key": keys})


def comparison_metrics(scores: dict) -> dict:
    """The handful of numbers that compare runs, under names short enough that `dvc exp show
    --only-changed` fits a terminal beside the changed params and the model's hash: test accuracy,
    val accuracy, the test split's macro F1 and loss, the expected calibration error of the test
    probabilities predict gives (after evaluate.calibrate's temperature) (and with evaluate.tta, test_acc_tta), rounded
    to 4 decimals (the training time is metrics/time.json's). The rest (bias, variance, top-k, best
    epoch, every split's scores) is in metrics/eval.json and metrics/train.json, at full precision."""
    test = scores["test"]
    summary = {"test_acc": test["accuracy"], "val_acc": scores["val"]["accuracy"], "f1": test["f1_macro"],
               "loss": test["loss"], "ece": scores["calibration"]["test"]["ece"]}
    if "tta" in scores:  # evaluate.tta: the test accuracy with test-time augmentation, a column beside
        summary["test_acc_tta"] = scores["tta"]["test"]["accuracy"]
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
        "compare runs   dvc exp show --only-changed --drop '^(data|models|stages|classifier)/|^params.yaml$|Created'",
        "detail         dvc metrics show metrics/eval.json    per class: python -m tools.report --per-class",
        rule,
    ])
