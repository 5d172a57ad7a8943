"""The tune section: the study and trial a run belongs to (read by train). tools.tune sets both with
`-S` for each trial it queues; a run outside a study keeps study "" and never prunes. Being params of
train, they are part of its run-cache key: a trial's outputs (maybe pruned) never stand in for a
plain run's, nor one trial's for another's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from .checks import Invalid, MAX_COUNT, number, spec

STUDY_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")


def study_name(value: Any) -> str:
    if value == "" or (isinstance(value, str) and STUDY_NAME.fullmatch(value)):
        return value
    raise Invalid("\"\" (no study) or a name of letters, digits, '_', '-' or '.' (at most 64)")


@dataclass(frozen=True)
class TuneParams:
    SECTION: ClassVar[str] = "tune"
    study: str = spec(study_name, "the tools.tune study this run is a trial of: train reports its val scores to the "
                                  "study's journal after every epoch and stops when its pruner says so (\"\": none)")
    trial: int = spec(number(int, ge=0, le=MAX_COUNT), "the trial's number in the study (set by tools.tune)")
