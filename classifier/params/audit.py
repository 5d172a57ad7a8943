"""The audit section: the label audit's folds (read by audit). 0, the default, turns the stage into a
no-op that imports nothing heavy; K >= 2 trains K models, one per fold of train+val.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .checks import Invalid, MAX_SEED, number, spec

MAX_FOLDS = 20


def folds(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or 2 <= value <= MAX_FOLDS):
        raise Invalid(f"0 (off) or an integer from 2 to {MAX_FOLDS}")
    return value


@dataclass(frozen=True)
class AuditParams:
    SECTION: ClassVar[str] = "audit"
    folds: int = spec(folds, "label audit: K models, each trained as train trains on all of train+val but one fold, "
                             "predict the fold they never saw; cleanlab finds the labels those out-of-fold "
                             "predictions contradict (0: off, the stage writes empty results at once)")
    seed: int = spec(number(int, ge=0, le=MAX_SEED), "seed of the folds (stratified by class)")
