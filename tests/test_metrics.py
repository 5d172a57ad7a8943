"""Scores match scikit-learn; plot data has the shape DVC's templates read; PNGs are written."""
from __future__ import annotations

import numpy as np
import pytest
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, top_k_accuracy_score

from classifier.evaluation.charts import plot_confusion, plot_learning_curves
from classifier.evaluation.plotting import plot_image_grid
from classifier.evaluation.scores import classification_report, per_class_json, predictions_table, top_k_accuracy, top_k_scores

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
    keys = [f"data/raw/x/{i}.png" for i in range(len(Y_TRUE))]
    table = predictions_table(Y_TRUE, Y_PRED, CLASSES, keys)
    assert table.columns.tolist() == ["actual", "predicted", "key"] and len(table) == len(Y_TRUE)
    assert table.iloc[1].tolist() == ["cat", "dog", keys[1]]


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_pngs_are_written(tmp_path) -> None:
    plot_confusion(Y_TRUE, Y_PRED, CLASSES, "val", tmp_path / "confusion.png")
    history = pd.DataFrame({"epoch": [1, 2], "lr": [0.1, 0.1], "train_loss": [1.0, 0.5],
                            "train_accuracy": [0.5, 0.8], "val_loss": [1.1, 0.7], "val_accuracy": [0.4, 0.7]})
    plot_learning_curves(history, tmp_path / "curves.png")
    plot_image_grid([[np.zeros((8, 8, 1), np.uint8)] * 3], [["a", "b", "c"]], tmp_path / "grid.png")
    plot_image_grid([], [], tmp_path / "empty.png", empty="no misclassified val image")
    for name in ("confusion.png", "curves.png", "grid.png", "empty.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _pixels_of(path, rgb: tuple[int, int, int]) -> np.ndarray:
    """A mask of the PNG's pixels of colour `rgb` (within a few levels of antialiasing)."""
    import cv2
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(int)
    return (np.abs(image - np.array(rgb)).max(axis=2) <= 6)


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_learning_curves_mark_the_saved_epoch_and_the_fine_tuning_boundary(tmp_path) -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "lr": [0.1] * 4, "train_loss": [1.0, 0.5, 0.4, 0.3],
                            "train_accuracy": [0.5, 0.8, 0.85, 0.9], "val_loss": [1.1, 0.7, 0.6, 0.65],
                            "val_accuracy": [0.4, 0.7, 0.75, 0.74], "phase": ["head", "head", "finetune", "finetune"]})
    green, purple = (0x2C, 0xA0, 0x2C), (0x94, 0x67, 0xBD)  # matplotlib's tab:green and tab:purple
    plot_learning_curves(history.drop(columns="phase"), tmp_path / "plain.png")
    plot_learning_curves(history, tmp_path / "marked.png", saved_epoch=3)
    assert not _pixels_of(tmp_path / "plain.png", green).any() and not _pixels_of(tmp_path / "plain.png", purple).any()
    for colour in (green, purple):
        rows = np.flatnonzero(_pixels_of(tmp_path / "marked.png", colour).sum(axis=1))
        assert len(rows) > 40 and rows.max() - rows.min() > 250, colour  # a (dotted) line from bottom to top


def test_the_gallery_is_titled_and_shows_each_image_at_least_96_px(tmp_path) -> None:
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    for count in (1, 8):
        path = tmp_path / f"gallery{count}.png"
        plot_image_grid([[red] * count], [["true a\npred b 90%"] * count], path, title="worst mistakes")
        mask = _pixels_of(path, (255, 0, 0))
        columns = np.flatnonzero(mask.any(axis=0))
        first = columns[: np.argmax(np.diff(columns) > 1) + 1] if count > 1 else columns
        assert len(first) >= 96 and mask.any(axis=1).sum() >= 96, (count, len(first))
        # The title: dark text above the first image.
        import cv2
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        top = np.flatnonzero(mask.any(axis=1))[0]
        assert (grey[: top - 20] < 100).any(), "no title above the images"


def test_the_train_sample_is_seeded_sorted_and_only_taken_when_the_split_is_larger() -> None:
    from stages.evaluate import scored_rows
    rows = scored_rows(43_750, 10_000)
    assert len(rows) == len(set(rows.tolist())) == 10_000 and (np.diff(rows) > 0).all() and rows.max() < 43_750
    assert (scored_rows(43_750, 10_000) == rows).all() and not (scored_rows(43_750, 10_000, seed=1) == rows).all()
    assert scored_rows(9_000, 10_000) is None and scored_rows(43_750, 0) is None


def test_a_long_title_over_a_narrow_grid_wraps_inside_the_image(tmp_path) -> None:
    """augment's preview (three columns) clipped its 71-character title at both edges."""
    import cv2
    path = tmp_path / "preview.png"
    title = "train images as ingested, as prepared (original) and their copies"
    plot_image_grid([[np.zeros((8, 8, 1), np.uint8)] * 3] * 2, [["a", "b", "c"]] * 2, path, title=title)
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    first_image_row = np.flatnonzero((grey[:, 8:16] == 0).all(axis=1))[0]  # the black images start at x = 6
    band = grey[:first_image_row]
    ink = np.flatnonzero((band < 128).any(axis=0))
    assert len(ink) and ink.min() > 2 and ink.max() < grey.shape[1] - 3, "the title touches the image's edge"
