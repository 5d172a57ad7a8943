"""Stage train: fit the model named in params on the augmented train split.

    python -m stages.train

Uses CUDA when there is a GPU (train.device: auto) and the CPU otherwise. Prints one line per
epoch. Keeps the last epoch's weights, or with train.checkpoint: best the best epoch's by
train.monitor on the val split (early stopping with train.patience). Writes models/model.pt
(stages/lib/checkpoint.py: those weights plus everything evaluate and predict need),
metrics/train.json and plots/train/: history.csv (per epoch: lr, train and val cross-entropy, the
train objective, accuracies) and steps.csv (per batch).
"""
from __future__ import annotations

import dataclasses

import pandas as pd
import torch

from stages.lib import paths
from stages.lib.checkpoint import Checkpoint
from stages.lib.datasets import atomic_dir, load_array_set, read_json, write_json
from stages.lib.errors import PipelineError, run_stage
from stages.lib.models import InputShape, build_model, count_parameters
from stages.lib.params import load_params
from stages.lib.preprocess import Preprocessing
from stages.lib.training import STEP_COLUMNS, Batches, class_weights, fit, select_device

PARAMS = ("model", "train")
DEPS = (paths.AUGMENTED_DIR, paths.PREPARED_DIR, paths.SPLIT_DIR, paths.PRETRAINED_DIR)
OUTS = (paths.MODEL_FILE, paths.TRAIN_METRICS, paths.TRAIN_PLOTS)


def main() -> None:
    params = load_params(*PARAMS)
    device = select_device(params.train.device)
    classes = read_json(paths.CLASSES_FILE)
    preprocessing = Preprocessing.read(paths.STATS_FILE)
    train_set = load_array_set(paths.AUGMENTED_DIR / "train")
    val_set = load_array_set(paths.PREPARED_DIR / "val")
    _, height, width, channels = train_set.images.shape
    if (channels, height, width) != preprocessing.input_shape:
        raise PipelineError(f"{paths.AUGMENTED_DIR} holds {channels}×{height}×{width} images but {paths.STATS_FILE} "
                            f"says {'×'.join(map(str, preprocessing.input_shape))}: rerun `dvc repro`")
    shape = InputShape(channels, height, width, len(classes))

    torch.manual_seed(params.train.seed)  # weight initialisation
    model = build_model(params.model, shape).to(device)
    train, val = Batches(train_set.images, train_set.labels, device), Batches(val_set.images, val_set.labels, device)
    trainable = count_parameters(model)
    print(f"train: {params.model.name} ({trainable:,} trainable parameters) on {device}, {len(train)} train / "
          f"{len(val)} val images of {channels}×{height}×{width}{'' if train.resident else ', streamed'}")
    result = fit(model, train, val, preprocessing.normalizer(device), params.train,
                 class_weights(params.train.class_weights, train_set.labels, len(classes)))

    state, saved_epoch = result.saved(params.train.checkpoint)
    Checkpoint(state, params.model, classes, preprocessing, saved_epoch, params.train.device,
               params.train.amp).save(paths.MODEL_FILE)
    saved = result.history[saved_epoch - 1]
    write_json(paths.TRAIN_METRICS, {
        "epochs": len(result.history),
        "saved_epoch": saved_epoch,
        "best_epoch": result.best_epoch,  # by train.monitor; its val scores are in plots/train/history.csv
        "stopped_early": result.stopped_early,
        "parameters": trainable,
        "params_per_sample": trainable / len(train),
        # At the saved epoch, averaged over its steps in train mode; val scores: metrics/eval.json.
        "train_loss": saved.train_loss, "train_accuracy": saved.train_accuracy,
    })
    with atomic_dir(paths.TRAIN_PLOTS) as out:
        pd.DataFrame([dataclasses.asdict(r) for r in result.history]).to_csv(out / paths.HISTORY_FILE.name, index=False)
        pd.DataFrame(result.steps, columns=list(STEP_COLUMNS)).to_csv(out / "steps.csv", index=False)
    which = f"the best by {params.train.monitor}" if params.train.checkpoint == "best" else "the last"
    print(f"train: saved epoch {saved_epoch} ({which}; best {params.train.monitor}: epoch {result.best_epoch}) "
          f"to {paths.MODEL_FILE}")


if __name__ == "__main__":
    run_stage(main)
