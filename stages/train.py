"""Stage train: fit the model named in params on the augmented train split.

    python -m stages.train

Uses CUDA when there is a GPU (train.device: auto) and the CPU otherwise. Prints one line per
epoch. Keeps the best epoch by train.monitor on the val split (early stopping with
train.patience). Writes models/model.pt (the best epoch's weights plus everything predict needs:
class names, input shape, preprocessing, normalisation, model params), metrics/train.json and plots/train/:
history.csv (per epoch: lr, train and val loss and accuracy) and steps.csv (per batch: loss, lr).
"""
from __future__ import annotations

import dataclasses
import io

import pandas as pd
import torch

from stages.lib import paths
from stages.lib.datasets import atomic_dir, atomic_file, load_array_set, read_json, write_json
from stages.lib.errors import run_stage
from stages.lib.models import InputShape, build_model, count_parameters
from stages.lib.params import ModelParams, load_params
from stages.lib.training import Batches, Normalizer, class_weights, fit, select_device

PARAMS = ("model", "train")
DEPS = (paths.AUGMENTED_DIR, paths.PREPARED_DIR, paths.SPLIT_DIR)
OUTS = (paths.MODEL_FILE, paths.TRAIN_METRICS, paths.TRAIN_PLOTS)


def checkpoint_params(params: ModelParams) -> dict:
    """The model params as plain YAML-like values (tuples -> lists), loadable with weights_only=True."""
    def plain(value):
        return [plain(v) for v in value] if isinstance(value, tuple) else value
    return {k: plain(v) for k, v in dataclasses.asdict(params).items()}


def main() -> None:
    params = load_params(*PARAMS)
    device = select_device(params.train.device)
    classes = read_json(paths.CLASSES_FILE)
    stats = read_json(paths.STATS_FILE)
    train_set = load_array_set(paths.AUGMENTED_DIR / "train")
    val_set = load_array_set(paths.PREPARED_DIR / "val")
    _, height, width, channels = train_set.images.shape
    shape = InputShape(channels, height, width, len(classes))

    torch.manual_seed(params.train.seed)  # weight initialisation
    model = build_model(params.model, shape).to(device)
    normalize = Normalizer(tuple(stats["mean"]), tuple(stats["std"]))
    train, val = Batches(train_set.images, train_set.labels, device), Batches(val_set.images, val_set.labels, device)
    trainable = count_parameters(model)
    print(f"train: {params.model.name} ({trainable:,} trainable parameters) on {device}, {len(train)} train / "
          f"{len(val)} val images of {channels}×{height}×{width}{'' if train.resident else ', streamed'}")
    result = fit(model, train, val, normalize, params.train,
                 class_weights(params.train.class_weights, train_set.labels, len(classes)))

    checkpoint = {
        "state_dict": result.best_state,
        "model": checkpoint_params(params.model),
        "classes": classes,
        "input_shape": [channels, height, width],
        "normalization": {"mean": list(normalize.mean), "std": list(normalize.std)},
        "preprocess": stats["preprocess"],  # the prepare params: predict repeats them on new images
        "epoch": result.best_epoch,
    }
    best = result.history[result.best_epoch - 1]
    with atomic_file(paths.MODEL_FILE) as tmp:
        buffer = io.BytesIO()  # saving to the random temporary name would put that name in the archive
        torch.save(checkpoint, buffer)
        tmp.write_bytes(buffer.getvalue())
    write_json(paths.TRAIN_METRICS, {
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "parameters": trainable,
        "params_per_sample": trainable / len(train),
        # At the best epoch, averaged over its steps in train mode; val scores: metrics/eval.json.
        "train_loss": best.train_loss, "train_accuracy": best.train_accuracy,
    })
    with atomic_dir(paths.TRAIN_PLOTS) as out:
        pd.DataFrame([dataclasses.asdict(r) for r in result.history]).to_csv(out / paths.HISTORY_FILE.name, index=False)
        pd.DataFrame(result.steps, columns=["step", "epoch", "loss", "lr"]).to_csv(out / "steps.csv", index=False)
    print(f"train: saved epoch {result.best_epoch} (best {params.train.monitor}) to {paths.MODEL_FILE}")


if __name__ == "__main__":
    run_stage(main)
