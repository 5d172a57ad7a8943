"""Health checks: each fires on the failure it names and stays quiet on a healthy run."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from classifier.evaluation.health import Curves, check_collapse, check_divergence, check_fit, check_spikes, faded_learning_rate, find_spikes
from classifier.models.inference import predict_logits
from classifier.data.preprocessing import Normalizer

CLASSES = ["rock", "paper", "scissors"]


def test_a_model_forced_to_one_class_triggers_the_collapse_check() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, 9.0, 0.0]))  # always "paper"
    images = torch.randint(0, 255, (30, 1, 4, 4), dtype=torch.uint8)
    y_pred = predict_logits(model, images, Normalizer((0.5,), (0.5,))).argmax(1).numpy()
    y_true = np.arange(30) % 3
    finding = check_collapse(y_true, y_pred, CLASSES)
    assert finding.seen
    assert finding.message.startswith("predictions collapsed: every val image predicted as 'paper' (accuracy 33.33%)")
    assert "lower train.lr" in finding.message


def test_accuracy_equal_to_the_majority_share_is_a_collapse() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 2, 0, 1, 0, 2])  # 50% right = the share of class 0
    assert check_collapse(y_true, y_pred, CLASSES).seen
    assert not check_collapse(y_true, np.array([0, 0, 0, 0, 1, 1, 2, 1]), CLASSES).seen


def test_the_majority_share_is_the_truths_not_the_predictions() -> None:
    """Accuracy equal to the true majority class's share (60% rock) is what always answering rock gets;
    the predictions' own largest share (50% here, and 50% = accuracy in the second case) is no yardstick."""
    y_true = np.array([0] * 6 + [1] * 2 + [2] * 2)
    assert check_collapse(y_true, np.array([1, 0, 0, 0, 0, 2, 1, 1, 0, 1]), CLASSES).seen  # 60% right
    assert not check_collapse(y_true, np.array([2, 1, 0, 0, 2, 1, 1, 1, 2, 1]), CLASSES).seen  # 50% right


def test_nearly_all_predictions_on_a_rarer_class_is_a_collapse() -> None:
    y_true = np.array([0] * 10 + [1] * 5 + [2] * 5)
    nearly = np.array([0] * 19 + [2])  # 95% predicted as rock, which is half of the images
    finding = check_collapse(y_true, nearly, CLASSES)
    assert finding.seen and finding.message.startswith(
        "predictions nearly collapsed: 95% of val images predicted as 'rock', which is 50% of them")
    assert not check_collapse(np.array([0] * 19 + [2]), nearly, CLASSES).seen  # rock is 95% of them: fine


def imbalanced_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """120 12×12 images of three classes (half of them rock) told apart by a faint bright third."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 60 + [1] * 30 + [2] * 30)
    images = rng.integers(0, 100, size=(120, 12, 12, 1), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, :, 4 * label:4 * label + 4] += 60
    return images, labels


@pytest.mark.parametrize("rho, collapses", [(0.05, False), (1.0, True)])
def test_sharpness_aware_minimisation_that_collapses_is_caught(rho, collapses) -> None:
    """The hand-gesture log's failure: SAM with too large a radius ends predicting one class."""
    from classifier.models.registry import InputShape, build_model
    from classifier.params.whole_file import load_params
    from classifier.training.device_dataset import DeviceDataset
    from classifier.training.loop import FitData, fit
    from tests.helpers import quiet
    params = load_params("model", "train")
    train = dataclasses.replace(params.train, optimizer="sam", sam_rho=rho, lr=0.05, epochs=8, batch_size=16,
                                scheduler="none", patience=0, device="cpu")
    images, labels = imbalanced_images()
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(params.model, name="mlp", hidden=(32, 32), dropout=0.0),
                        InputShape(1, 12, 12, 3))
    cpu = torch.device("cpu")
    normalize = Normalizer((0.3,), (0.3,))
    fit(model, FitData(DeviceDataset(images, labels, cpu), DeviceDataset(images[:30], labels[:30], cpu), normalize), train,
        quiet())
    predicted = predict_logits(model, DeviceDataset(images, labels, cpu), normalize).argmax(1).numpy()
    assert check_collapse(labels, predicted, CLASSES).seen == collapses, np.bincount(predicted, minlength=3)


def test_divergence() -> None:
    assert not check_divergence([2.3, 1.0, 0.4]).seen
    rising = check_divergence([1.0, 0.8, 1.7])
    assert rising.seen and "rose from 1 (epoch 1) to 1.7 (epoch 3)" in rising.message
    assert check_divergence([1.0, math.nan]).seen


def test_spikes_are_found_once_per_episode_and_not_in_noise() -> None:
    rng = np.random.default_rng(0)
    healthy = list(2.3 * np.exp(-np.arange(300) / 40) + rng.uniform(0, 0.05, 300))
    assert find_spikes(healthy, 3.0, 10) == [] and not check_spikes(healthy, 3.0, 10).seen
    spiky = healthy.copy()
    spiky[200:215] = [2.0] * 15  # one episode of 15 steps at a loss the run had left long ago
    spikes = find_spikes(spiky, 3.0, 10)
    assert len(spikes) == 1 and 200 <= spikes[0] < 215
    finding = check_spikes(spiky, 3.0, 10)
    assert finding.seen and finding.count == 1 and "raise train.batch_size" in finding.message
    tiny_noise = [0.001 if i % 7 else 0.02 for i in range(300)]  # ×20 jumps, but near zero: no spike
    assert find_spikes(tiny_noise, 3.0, 10) == []


def curves(train_accuracy, val_loss, train_loss=None, val_accuracy=None, lr=None) -> Curves:
    n = len(train_accuracy)
    return Curves(list(range(1, n + 1)), lr or [0.1] * n, train_loss or [1.0 - 0.05 * e for e in range(n)],
                  list(train_accuracy), list(val_loss), val_accuracy or list(train_accuracy))


def seen(findings) -> set[str]:
    return {f.check for f in findings if f.seen}


def test_a_run_that_overfit_after_epoch_5_is_called_overfitting_not_underfitting() -> None:
    """The experiment log's case: the saved epoch 5 had 63.7% train accuracy, the last epoch 80%."""
    run = curves(train_accuracy=[0.40, 0.50, 0.56, 0.60, 0.637, 0.68, 0.72, 0.76, 0.78, 0.80],
                 val_loss=[1.0, 0.85, 0.75, 0.70, 0.66, 0.70, 0.78, 0.85, 0.93, 1.02],
                 val_accuracy=[0.40, 0.50, 0.55, 0.58, 0.60, 0.60, 0.59, 0.58, 0.58, 0.57])
    findings = check_fit(run, train_accuracy=0.637, val_accuracy=0.60, max_gap=0.05, low=0.7)
    assert seen(findings) == {"overfitting"}
    over = next(f for f in findings if f.check == "overfitting")
    assert over.message.startswith("overfitting from epoch 6: the val loss rose from 0.66 (epoch 5) to 1.02 (epoch 10) "
                                   "while the train loss fell from 0.8 to 0.55")


def test_underfitting_is_judged_on_the_best_epoch_and_names_a_faded_learning_rate() -> None:
    run = curves(train_accuracy=[0.3, 0.45, 0.5, 0.5, 0.5], val_loss=[1.5, 1.3, 1.25, 1.25, 1.25],
                 lr=[0.1, 0.1, 1e-4, 1e-5, 1e-6])
    findings = check_fit(run, train_accuracy=0.5, val_accuracy=0.48, max_gap=0.01, low=0.7)
    assert seen(findings) == {"underfitting"}  # a gap of 2% with both so low is no overfitting verdict
    under = next(f for f in findings if f.check == "underfitting")
    assert "best train accuracy of any epoch was 50.00%" in under.message
    assert ("the learning rate is what limits the run: the schedule took it from 0.1 to 1e-06 by epoch 3 and its "
            "last 3 epochs learnt almost nothing") in under.message
    assert "raise train.step_size or train.gamma" in under.message and "train longer" not in under.message


def test_a_cosine_schedule_reaching_its_low_at_the_end_is_no_limit() -> None:
    """Cosine over train.epochs: more epochs stretch it, so "train longer" is the remedy."""
    lrs = [0.05 * (1 + math.cos(math.pi * e / 15)) / 2 for e in range(15)]
    run = curves(train_accuracy=[0.3 + 0.02 * e for e in range(15)], val_loss=[1.5 - 0.01 * e for e in range(15)],
                 lr=lrs)
    under = next(f for f in check_fit(run, 0.58, 0.55, max_gap=0.05, low=0.7) if f.check == "underfitting")
    assert under.seen and "train longer (train.epochs)" in under.message and "limits the run" not in under.message


def test_the_default_schedule_keeps_learning_through_the_default_epochs() -> None:
    """params.yaml's schedule, stepped as fit steps it: no epoch's learning rate is below a hundredth of
    the first; and with three times the epochs the schedule stretches, so the health checks never
    call the learning rate the limit (the "train longer" remedy works)."""
    from classifier.params.whole_file import load_params
    from classifier.training.optim import make_scheduler
    train = load_params("train").train
    for epochs in (train.epochs, 3 * train.epochs):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=train.lr)
        scheduler, per_step = make_scheduler(optimizer, dataclasses.replace(train, epochs=epochs), 10)
        lrs = []
        for _ in range(epochs):
            lrs.append(optimizer.param_groups[0]["lr"])
            for _ in range(10 if per_step else 1):
                optimizer.step()
                scheduler.step()
        if epochs == train.epochs:
            assert min(lrs) >= train.lr / 100, lrs
        history = curves(train_accuracy=[0.5] * epochs, val_loss=[1.0] * epochs, lr=lrs)
        assert faded_learning_rate(history) == "", (epochs, lrs)


def test_a_val_loss_wobbling_at_a_high_accuracy_is_no_overfitting() -> None:
    """A 99.16% run was called overfitting because its val loss went 0.0237 -> 0.0300: no evidence."""
    run = curves(train_accuracy=[0.90, 0.96, 0.98, 0.99, 0.993, 0.995, 0.996, 0.997, 0.998, 0.998],
                 val_loss=[0.09, 0.045, 0.031, 0.026, 0.0237, 0.027, 0.025, 0.029, 0.026, 0.030])
    assert seen(check_fit(run, 0.998, 0.9916, max_gap=0.05, low=0.7, num_classes=10)) == set()
    worse = dataclasses.replace(run, val_loss=[0.09, 0.045, 0.031, 0.026, 0.0237, 0.04, 0.06, 0.08, 0.1, 0.12])
    assert seen(check_fit(worse, 0.998, 0.9916, max_gap=0.05, low=0.7, num_classes=10)) == {"overfitting"}


def test_still_improving_at_the_end() -> None:
    run = curves(train_accuracy=[0.8, 0.9, 0.95], val_loss=[0.5, 0.3, 0.2])
    assert seen(check_fit(run, 0.95, 0.94, max_gap=0.05, low=0.7)) == {"still_improving"}
    assert seen(check_fit(run, 0.99, 0.90, max_gap=0.05, low=0.7)) == {"overfitting"}  # never both


def test_a_healthy_run_has_no_fit_verdict() -> None:
    run = curves(train_accuracy=[0.8, 0.95, 0.97, 0.98], val_loss=[0.5, 0.2, 0.15, 0.16])
    assert seen(check_fit(run, 0.99, 0.97, max_gap=0.05, low=0.7)) == set()


@pytest.mark.parametrize("train_accuracy,val_loss", [([0.2, 0.3, 0.35], [2.0, 1.8, 2.5]),
                                                      ([0.9, 0.95, 0.99], [0.3, 0.2, 0.6]),
                                                      ([0.5, 0.6, 0.65], [1.0, 0.9, 0.8])])
def test_verdicts_never_contradict(train_accuracy, val_loss) -> None:
    for gap in (0.0, 0.5):
        verdicts = seen(check_fit(curves(train_accuracy, val_loss), 0.9, 0.9 - gap, max_gap=0.05, low=0.7))
        assert len(verdicts) <= 1, verdicts


@pytest.mark.parametrize("losses, spiked, expected, not_expected", [
    ([2.303, 2.302, 2.302], False, "stayed flat near chance level (2.303 to 2.302; ln 10 classes = 2.3): the model "
                                   "barely learnt: raise train.lr (now 5e-05)", "lower train.lr"),
    ([2.3, 5.1, 9.7], False, "the train loss rose (2.3 to 9.7): lower train.lr (now 5e-05", "raise train.lr"),
    ([2.3, 0.4, 0.35], True, "the train loss spiked (2.3 to 0.35): lower train.lr", "raise train.lr"),
    ([2.3, math.nan], False, "lower train.lr", "raise train.lr"),
    ([2.3, 1.2, 0.9], False, "check the labels and prepare.normalize, try train.class_weights", "raise train.lr"),
    # One epoch whose loss spiked from 2.57 to 21.4 (mean 10.28): far above chance, no plateau.
    ([10.28], False, "the train loss stayed far above chance level (ln 10 classes = 2.3) (10.28 to 10.28): lower "
                     "train.lr", "raise train.lr"),
])
def test_collapse_advice_follows_the_loss(losses, spiked, expected, not_expected) -> None:
    """A learning rate far too low keeps the loss flat at chance and needs the opposite advice to one that
    diverged or spiked; the message of the collapse carries it."""
    from classifier.evaluation.health import collapse_remedy
    remedy = collapse_remedy(losses, [5e-05] * len(losses), 10, spiked)
    assert expected in remedy and not_expected not in remedy
    finding = check_collapse(np.arange(20) % 2, np.zeros(20, dtype=int), ["a", "b"], remedy=remedy)
    assert finding.seen and finding.message.endswith(remedy)


def test_underfitting_with_a_flat_loss_at_chance_says_raise_the_learning_rate() -> None:
    flat = Curves([1, 2, 3], [5e-05] * 3, [2.2956, 2.2883, 2.2799], [0.05, 0.054, 0.058], [2.30, 2.29, 2.28],
                  [0.017, 0.022, 0.028])
    under = {f.check: f for f in check_fit(flat, 0.06, 0.03, 0.05, 0.7, num_classes=10)}["underfitting"]
    assert under.seen and "stayed flat near chance level" in under.message and "raise train.lr (now 5e-05)" in under.message
    learning = dataclasses.replace(flat, train_loss=[2.2, 1.6, 1.2])  # falling, still low accuracy: the old advice
    under = {f.check: f for f in check_fit(learning, 0.06, 0.03, 0.05, 0.7, num_classes=10)}["underfitting"]
    assert under.seen and "raise train.lr" not in under.message and "train longer (train.epochs)" in under.message


def test_the_faded_learning_rate_needs_a_tenth_of_the_run_at_the_end() -> None:
    """30 epochs: a tail of 3 faded epochs (a tenth) is named, a tail of 2 is not."""
    def curves(faded: int) -> Curves:
        lrs = [0.1] * (30 - faded) + [1e-4] * faded
        flat = [0.5] * 30
        return Curves(list(range(1, 31)), lrs, flat, flat, flat, flat)
    assert "its last 3 epochs learnt almost nothing" in faded_learning_rate(curves(3))
    assert faded_learning_rate(curves(2)) == ""
