"""Stage evaluate: score the trained model on the val and test splits (never on augmented data).

    python -m stages.evaluate

Writes metrics/eval.json ({val,test}: accuracy, loss, macro precision/recall/F1: the columns of
`dvc exp show`), metrics/per_class.json ({val,test}: per class precision/recall/F1/support: see it
with `dvc metrics show metrics/per_class.json`) and plots/eval/: {val,test}_predictions.csv (one
row per image, actual and predicted class: DVC's confusion template), per_class_{val,test}.csv
(per-class bars), confusion_{val,test}.png heatmaps and learning_curves.png (loss and accuracy per
epoch from training's history).
"""
from __future__ import annotations

import pandas as pd
import torch

from stages.lib import paths
from stages.lib.datasets import atomic_dir, load_array_set, write_json
from stages.lib.errors import run_stage
from stages.lib.metrics import (classification_report, per_class_json, plot_confusion, plot_learning_curves,
                                predictions_table)
from stages.lib.models import load_checkpoint
from stages.lib.training import Normalizer, images_to_tensor, loss_and_accuracy, predict_logits, select_device

PARAMS: tuple[str, ...] = ()
DEPS = (paths.MODEL_FILE, paths.PREPARED_DIR, paths.TRAIN_PLOTS)
OUTS = (paths.EVAL_METRICS, paths.PER_CLASS_METRICS, paths.EVAL_PLOTS)
EVAL_SPLITS = ("val", "test")


def main() -> None:
    device = select_device("auto")
    model, checkpoint = load_checkpoint(paths.MODEL_FILE, device)
    classes = checkpoint["classes"]
    normalize = Normalizer(tuple(checkpoint["normalization"]["mean"]), tuple(checkpoint["normalization"]["std"]))
    scores, per_class = {}, {}
    with atomic_dir(paths.EVAL_PLOTS) as out:
        for split in EVAL_SPLITS:
            data = load_array_set(paths.PREPARED_DIR / split)
            labels = torch.from_numpy(data.labels).to(device)
            logits = predict_logits(model, images_to_tensor(data.images, device), normalize)
            loss, _ = loss_and_accuracy(logits, labels)
            y_true, y_pred = data.labels, logits.argmax(1).cpu().numpy()
            summary, table = classification_report(y_true, y_pred, classes)
            scores[split] = {**summary, "loss": loss}
            per_class[split] = per_class_json(table)
            predictions_table(y_true, y_pred, classes).to_csv(out / f"{split}_predictions.csv", index=False)
            table.to_csv(out / f"per_class_{split}.csv", index=False)
            plot_confusion(y_true, y_pred, classes, f"{split}: accuracy {scores[split]['accuracy']:.2%}",
                           out / f"confusion_{split}.png")
            print(f"evaluate: {split} accuracy {scores[split]['accuracy']:.2%}  macro F1 "
                  f"{scores[split]['f1_macro']:.4f}  loss {loss:.4f}  ({len(y_true)} images)")
        plot_learning_curves(pd.read_csv(paths.HISTORY_FILE), out / "learning_curves.png")
    write_json(paths.EVAL_METRICS, scores)
    write_json(paths.PER_CLASS_METRICS, per_class)


if __name__ == "__main__":
    run_stage(main)
