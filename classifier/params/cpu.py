"""The train section's cpu_threads: how train and evaluate compute on the CPU (read by both, so
that evaluate's scores repeat to the bit as train's model does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .checks import number, spec


@dataclass(frozen=True)
class CpuParams:
    SECTION: ClassVar[str] = "train"
    SHARES_SECTION: ClassVar[bool] = True  # the other keys: train.py
    cpu_threads: int = spec(number(int, ge=0, le=1024),
                            "N >= 1: PyTorch's portable CPU kernels and N threads in train and evaluate, so that the "
                            "model and the scores are the same bytes on every x86-64 CPU (about 20% slower); 0: the "
                            "fastest kernels the CPU has and all its cores, results that differ by CPU type")
