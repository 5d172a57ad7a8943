"""Health checks: each fires on the failure it names and stays quiet on a healthy run."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from stages.lib.health import check_collapse, check_divergence, check_fit, check_spikes, find_spikes
from stages.lib.preprocess import Normalizer
from stages.lib.training import predict_logits

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


def test_overfitting_and_underfitting() -> None:
    over, under = check_fit(1.0, 0.85, max_gap=0.05, low=0.7)
    assert over.seen and not under.seen
    assert "overfitting: train accuracy 100.00% vs val 85.00% (gap 15.00% > evaluate.overfit_gap 5.00%)" in over.message
    over, under = check_fit(0.5, 0.45, max_gap=0.05, low=0.7)
    assert under.seen and not over.seen and "train longer (train.epochs)" in under.message
    assert not any(f.seen for f in check_fit(0.99, 0.97, max_gap=0.05, low=0.7))
