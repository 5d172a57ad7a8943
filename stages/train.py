"""Stage train: fit the model named in params on the augmented train split.

    python -m stages.train

Uses CUDA when there is a GPU (train.device: auto) and the CPU otherwise. Prints one line per
epoch. Writes models/model.pt (weights plus everything predict needs: class names, input shape,
normalisation, model params), metrics/train.json and plots/train/history.csv (per epoch: lr,
train and val loss and accuracy).
"""
from __future__ import annotations

import dataclasses

import pandas as pd
import torch

from stages.lib import paths
from stages.lib.datasets import atomic_dir, atomic_file, load_array_set, read_json, write_json
from stages.lib.errors import run_stage
from stages.lib.models import InputShape, build_model, count_parameters
from stages.lib.params import load_params
from stages.lib.training import Normalizer, fit, images_to_tensor, select_device

PARAMS = ("model", "train")
DEPS = (paths.AUGMENTED_DIR, paths.PREPARED_DIR, paths.SPLIT_DIR)
OUTS = (paths.MODEL_FILE, paths.TRAIN_METRICS, paths.TRAIN_PLOTS)


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
    print(f"train: {params.model.name} ({count_parameters(model):,} parameters) on {device}, "
          f"{len(train_set.labels)} train / {len(val_set.labels)} val images of {channels}×{height}×{width}")
    history = fit(
        model,
        images_to_tensor(train_set.images, device), torch.from_numpy(train_set.labels).to(device),
        images_to_tensor(val_set.images, device), torch.from_numpy(val_set.labels).to(device),
        normalize, params.train)

    checkpoint = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params.model).items()},
        "classes": classes,
        "input_shape": [channels, height, width],
        "normalization": {"mean": list(normalize.mean), "std": list(normalize.std)},
    }
    last = history[-1]
    with atomic_file(paths.MODEL_FILE) as tmp:
        torch.save(checkpoint, tmp)
    write_json(paths.TRAIN_METRICS, {
        "epochs": len(history),
        "parameters": count_parameters(model),
        # Last epoch, averaged over its steps in train mode; val scores are evaluate's (metrics/eval.json).
        "train_loss": last.train_loss, "train_accuracy": last.train_accuracy,
    })
    with atomic_dir(paths.TRAIN_PLOTS) as out:
        pd.DataFrame([dataclasses.asdict(r) for r in history]).to_csv(out / paths.HISTORY_FILE.name, index=False)


if __name__ == "__main__":
    run_stage(main)
