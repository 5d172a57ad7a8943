"""The evaluate section: what evaluate scores and draws, and its health thresholds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .checks import choice, number, spec


@dataclass(frozen=True)
class EvaluateParams:
    SECTION: ClassVar[str] = "evaluate"
    top_k: int = spec(number(int, ge=1, le=1000), "top-k accuracy: the true class among the k highest scores")
    target_accuracy: float = spec(number(float, gt=0, le=1),
                                  "the accuracy aimed at (e.g. human level): avoidable bias = this - train accuracy")
    overfit_gap: float = spec(number(float, ge=0, le=1), "health: train - val accuracy above this is overfitting")
    underfit_accuracy: float = spec(number(float, ge=0, le=1),
                                    "health: train and val accuracy both below this is underfitting")
    spike_factor: float = spec(number(float, gt=1, le=1e6), "health: the loss (averaged over 10 steps) rising above this × "
                                                      "its lowest level is a spike")
    train_sample: int = spec(number(int, ge=0, le=10**9),
                             "train images scored, a seeded random sample when the split is larger (0: all): the train "
                             "scores judge fit (bias, over- and underfitting); val and test are always scored whole")
    gallery_size: int = spec(number(int, ge=0, le=256), "worst misclassified val images shown in worst_val.png")
    tta: str = spec(choice("none", "flip", "crops"),
                    "test-time augmentation, scored beside the plain scores: flip (and the mirror image), crops "
                    "(and four corner crops); none: off")
    calibrate: str = spec(choice("none", "temperature"),
                          "temperature: fit one temperature on val that divides the logits (the predicted class stays; "
                          "the probabilities move toward the accuracy they claim); tools.predict and tools.export use "
                          "it. ECE and the Brier score are reported either way")
