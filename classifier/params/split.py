"""The split section: which images go to train, val and test (read by split).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from classifier.runtime.errors import PipelineError
from .checks import Invalid, MAX_COUNT, MAX_SEED, boolean, choice, number, spec, string_list


def _class_mapping(value: Any) -> tuple[tuple[str, str], ...]:
    """{old class: new class}, kept as sorted pairs so the dataclass stays frozen and hashable."""
    if not isinstance(value, dict) or not all(
            isinstance(v, (str, int)) and str(k).strip() and str(v).strip() for k, v in value.items()):
        raise Invalid("a mapping of class name -> new class name")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


@dataclass(frozen=True)
class SplitParams:
    SECTION: ClassVar[str] = "split"
    train: float = spec(number(float, gt=0, lt=1), "fraction of each class for training")
    val: float = spec(number(float, gt=0, lt=1), "fraction of each class for validation")
    test: float = spec(number(float, gt=0, lt=1), "fraction of each class for the final test")
    seed: int = spec(number(int, ge=0, le=MAX_SEED), "seed of the shuffle inside each class and of down-sampling")
    merge: tuple[tuple[str, str], ...] = spec(_class_mapping, "classes renamed before splitting: {old: new}; "
                                                               "several old names may share a new one")
    drop: tuple[str, ...] = spec(string_list, "classes left out (names after merge)")
    max_per_class: int = spec(number(int, ge=0, le=10**9), "cap on images per class, randomly down-sampled (0: no cap)")
    balance: bool = spec(boolean, "down-sample every class to the smallest class's count")
    min_per_split: int = spec(number(int, ge=1, le=MAX_COUNT),
                              "images of every class each split must get; a smaller class is an error")
    missing_val: str = spec(choice("carve", "test"),
                            "a source given as train/ and test/ without val/: carve (val is cut out of train/ by "
                            "the fractions) or test (all of train/ trains, as a plain script would, and the given "
                            "test split is also val, so model selection and early stopping see the test images)")
    given_val: str = spec(choice("val", "test"),
                          "a source given as train/ and val/ without test/ (PyTorch's tutorial layout): val (val/ "
                          "is the val split and test is cut out of train/ by the fractions) or test (val/ is the "
                          "test set, never seen in training, and val is cut out of train/)")

    def __post_init__(self) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise PipelineError(
                f"The 'split.train', 'split.val' and 'split.test' parameters must sum to 1. "
                f"Got {self.train:g} + {self.val:g} + {self.test:g} = {total:g} instead.")
