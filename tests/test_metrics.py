"""Scores match scikit-learn; plot data has the shape DVC's templates read; PNGs are written."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, top_k_accuracy_score

from stages.lib.metrics import (classification_report, per_class_json, plot_confusion, plot_image_grid,
                                plot_learning_curves, predictions_table, top_k_accuracy, top_k_scores)

CLASSES = ["cat", "dog", "owl"]
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
Y_PRED = np.array([0, 1, 0, 1, 1, 2, 0, 2, 2, 1])


def test_scores_match_scikit_learn() -> None:
    summary, table = classification_report(Y_TRUE, Y_PRED, CLASSES)
    assert summary["accuracy"] == accuracy_score(Y_TRUE, Y_PRED)
    assert np.isclose(summary["f1_macro"], f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert np.isclose(summary["precision_macro"], precision_score(Y_TRUE, Y_PRED, average="macro"))
    assert np.isclose(summary["recall_macro"], recall_score(Y_TRUE, Y_PRED, average="macro"))
    for name, score in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert np.isclose(summary[f"{name}_weighted"], score(Y_TRUE, Y_PRED, average="weighted"))
        np.testing.assert_allclose(table[name], score(Y_TRUE, Y_PRED, average=None))
    assert table["class"].tolist() == CLASSES and table["support"].tolist() == [3, 3, 4]
    # per-class accuracy: the share of the class's images predicted right
    assert table["accuracy"].tolist() == [2 / 3, 1.0, 3 / 4]


def test_top_k_accuracy_matches_scikit_learn() -> None:
    scores = np.random.default_rng(0).random((40, 5))
    y_true = np.random.default_rng(1).integers(0, 5, 40)
    for k in (1, 2, 4):
        assert np.isclose(top_k_accuracy(scores, y_true, k), top_k_accuracy_score(y_true, scores, k=k,
                                                                                   labels=range(5)))
    assert top_k_accuracy(scores, y_true, 9) == 1.0  # k beyond the class count: every class counts


def test_top_k_is_reported_only_below_the_class_count() -> None:
    scores = np.random.default_rng(0).random((40, 5))
    y_true = np.random.default_rng(1).integers(0, 5, 40)
    assert top_k_scores(scores, y_true, 4) == {"top_k_accuracy": top_k_accuracy(scores, y_true, 4)}
    assert top_k_scores(scores, y_true, 5) == {} and top_k_scores(scores[:, :2], y_true % 2, 3) == {}


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    summary, table = classification_report(np.array([0, 1, 2]), np.array([0, 0, 0]), CLASSES)
    per_class = per_class_json(table)
    assert per_class["owl"] == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert not any(np.isnan(v) for v in summary.values())


def test_predictions_table_for_the_confusion_template() -> None:
    table = predictions_table(Y_TRUE, Y_PRED, CLASSES)
    assert table.columns.tolist() == ["actual", "predicted"] and len(table) == len(Y_TRUE)
    assert table.iloc[1].tolist() == ["cat", "dog"]


def test_pngs_are_written(tmp_path) -> None:
    plot_confusion(Y_TRUE, Y_PRED, CLASSES, "val", tmp_path / "confusion.png")
    history = pd.DataFrame({"epoch": [1, 2], "lr": [0.1, 0.1], "train_loss": [1.0, 0.5],
                            "train_accuracy": [0.5, 0.8], "val_loss": [1.1, 0.7], "val_accuracy": [0.4, 0.7]})
    plot_learning_curves(history, tmp_path / "curves.png")
    plot_image_grid([[np.zeros((8, 8, 1), np.uint8)] * 3], [["a", "b", "c"]], tmp_path / "grid.png")
    plot_image_grid([], [], tmp_path / "empty.png", empty="no misclassified val image")
    for name in ("confusion.png", "curves.png", "grid.png", "empty.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
