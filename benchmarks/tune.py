"""Benchmark: what a search that learns and prunes saves, on a set where the answer is known (issue 29).

Three searches of 16 runs each over train.lr × train.momentum, side by side in one process, on the
workspace's default data (digits, after `dvc repro`) and the default LeNet-5, every run the
training loop of train (classifier/training/loop.fit) for --epochs epochs from the same initial
weights:

- grid: lr in {0.001, 0.01, 0.1, 1.0} × momentum in {0, 0.5, 0.9, 0.99};
- random: lr log-uniform in [0.001, 1], momentum uniform in [0, 0.99], seeded;
- TPE with pruning: Optuna's TPE sampler over the same ranges, seeded, and the median pruner as
  tools.tune makes it by default (classifier/training/tuning.py: from the 5th run on, after 2 epochs, a run
  whose val accuracy is below the median of the earlier runs' at the same epoch stops there: fit's
  on_epoch says so).

A run whose loss turns NaN (an absurd rate) fails and scores 0. For each search: the best val
accuracy (at the run's last epoch), that run's test accuracy, and the epochs trained in all; with
--seeds, their mean ± std over seeds (the model's initial weights, the batch order, the draws).

    python -m benchmarks.tune [--epochs 12] [--seeds 3]     # after dvc repro; about 1.5 minutes a seed on 2 cores

Results in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import time
from typing import Callable

import optuna
import torch

from classifier.runtime import paths
from classifier.data.artifacts import load_array_set
from classifier.training.device_dataset import DeviceDataset
from classifier.runtime.errors import PipelineError
from classifier.models.inference import loss_and_accuracy, predict_logits
from classifier.models.registry import InputShape, build_model
from classifier.params.whole_file import load_params
from classifier.training.loop import EpochRecord, FitData, Hooks, fit, load_training_inputs
from classifier.training.tuning import StudySettings, make_pruner

LRS, MOMENTA = (0.001, 0.01, 0.1, 1.0), (0.0, 0.5, 0.9, 0.99)
RUNS = 16


class Data:
    """The default pipeline's arrays and the default model and train params, read once."""

    def __init__(self, epochs: int) -> None:
        params = load_params("model", "train")
        self.model_params = params.model
        self.train_params = dataclasses.replace(params.train, epochs=epochs, patience=0, scheduler="cosine")
        classes, preprocessing, train_set, val_set = load_training_inputs(params.model)
        test_set = load_array_set(paths.PREPARED_DIR / "test")
        cpu = torch.device("cpu")
        self.train, self.val = DeviceDataset(train_set.images, train_set.labels, cpu), DeviceDataset(
            val_set.images, val_set.labels, cpu)
        self.test = DeviceDataset(test_set.images, test_set.labels, cpu)
        self.normalize = preprocessing.normalizer(cpu)
        _, height, width, channels = train_set.images.shape
        self.shape = InputShape(channels, height, width, len(classes))

    def run(self, lr: float, momentum: float, on_epoch: Callable[[EpochRecord], bool] | None = None
            ) -> tuple[float, float, int]:
        """(val accuracy at the last epoch, test accuracy, epochs trained) of one run; a NaN loss: (0, 0, epochs)."""
        torch.manual_seed(self.train_params.seed)
        model = build_model(self.model_params, self.shape)
        epochs = []

        def seen(history: list[EpochRecord]) -> bool:
            epochs[:] = history
            return bool(on_epoch(history[-1])) if on_epoch is not None else False
        try:
            fit(model, FitData(self.train, self.val, self.normalize),
                dataclasses.replace(self.train_params, lr=lr, momentum=momentum), Hooks(log=lambda _: None, on_epoch=seen))
        except PipelineError:  # the loss diverged
            return 0.0, 0.0, len(epochs) + 1
        test_accuracy = loss_and_accuracy(predict_logits(model, self.test, self.normalize), self.test.labels)[1]
        return epochs[-1].val_accuracy, test_accuracy, len(epochs)


def grid(data: Data, seed: int) -> list[tuple[float, float, int]]:
    return [data.run(lr, momentum) for lr, momentum in itertools.product(LRS, MOMENTA)]


def random_search(data: Data, seed: int) -> list[tuple[float, float, int]]:
    rng = random.Random(seed)
    return [data.run(10 ** rng.uniform(-3, 0), rng.uniform(0, 0.99)) for _ in range(RUNS)]


def tpe_with_pruning(data: Data, seed: int) -> list[tuple[float, float, int]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=make_pruner(StudySettings(objective="val_accuracy")))  # tools.tune's default
    results = []
    for _ in range(RUNS):
        trial = study.ask()
        lr, momentum = trial.suggest_float("lr", 1e-3, 1.0, log=True), trial.suggest_float("momentum", 0.0, 0.99)

        def report(record: EpochRecord) -> bool:
            trial.report(record.val_accuracy, record.epoch)
            return trial.should_prune()
        val_accuracy, test_accuracy, epochs = data.run(lr, momentum, report)
        if not val_accuracy:  # diverged
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif epochs < data.train_params.epochs:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, val_accuracy)
        results.append((val_accuracy, test_accuracy, epochs))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=1, help="repeat each search with seeds 0..N-1 (init, order, draws)")
    args = parser.parse_args()
    data = Data(args.epochs)
    print(f"LeNet-5 on digits ({len(data.train)} train, {len(data.val)} val, {len(data.test)} test images), "
          f"{RUNS} runs a search, {args.epochs} epochs a run, seeds 0..{args.seeds - 1}; torch {torch.__version__}, "
          f"optuna {optuna.__version__}")
    print("| search | best val acc | its test acc | epochs trained (of 192) | wall time |")
    print("|---|---|---|---|---|")
    for name, search in (("grid 4×4", grid), ("random", random_search), ("TPE + median pruning", tpe_with_pruning)):
        started = time.perf_counter()
        bests, epochs = [], []
        for seed in range(args.seeds):
            data.train_params = dataclasses.replace(data.train_params, seed=seed)
            results = search(data, seed)
            bests.append(max(results, key=lambda r: r[0]))
            epochs.append(sum(r[2] for r in results))
        print(f"| {name} | {spread([b[0] for b in bests])} | {spread([b[1] for b in bests])} | "
              f"{spread(epochs, percent=False)} | {(time.perf_counter() - started) / args.seeds:.0f} s a search |",
              flush=True)


def spread(values: list[float], percent: bool = True) -> str:
    """'98.88% ± 0.31' (mean ± sample std over the seeds), or the value alone for one seed."""
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    if percent:
        return f"{mean:.2%}" + (f" ± {std * 100:.2f}" if std is not None else "")
    return f"{mean:.0f}" + (f" ± {std:.0f}" if std is not None else "")


if __name__ == "__main__":
    main()
