"""The whole of params.yaml: every section, and the rules that read more than one.

Run first by `dvc repro` as the params stage (`python -m stages.params`), so that a typo or a
bad value anywhere stops the pipeline in one line before any stage does work; also what the sweep
checks each drawn combination with, and what docs/params.md is generated from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from classifier.runtime.errors import PipelineError
from .audit import AuditParams
from .augment import AugmentParams
from .checks import (PARAMS_FILE, Sections, describe, parse_section, read_yaml, refuse_run_cache_blind_keys,
                     sections_from, unknown_key)
from .data import DataParams
from .evaluate import EvaluateParams
from .model import ModelParams
from .online_augment import OnlineAugmentParams
from .prepare import PrepareParams
from .split import SplitParams
from .train import TrainParams, check_with_model
from .tune import TuneParams

# params.yaml's sections in order, each with the dataclasses that read it.
SECTIONS: dict[str, tuple[type, ...]] = {
    "data": (DataParams,), "split": (SplitParams,), "prepare": (PrepareParams,),
    "augment": (AugmentParams, OnlineAugmentParams), "model": (ModelParams,), "train": (TrainParams,),
    "evaluate": (EvaluateParams,), "tune": (TuneParams,), "audit": (AuditParams,),
}
EVERY_CLASS = tuple(cls for classes in SECTIONS.values() for cls in classes)


def section_keys(section: str) -> dict[str, str]:
    """key -> meaning of every key of a section, whichever dataclass reads it."""
    return {key: doc for cls in SECTIONS[section] for key, doc in describe(cls).items()}


def validate(raw: Any, path: Path = PARAMS_FILE) -> Sections:
    """Every rule of the params file, cross-section ones included: its sections, parsed. The params
    stage and the sweep (each drawn combination) check with this one function."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping of sections, got {raw!r}")
    refuse_run_cache_blind_keys(raw)
    for key in raw:
        if key not in SECTIONS:
            raise unknown_key(str(key), list(SECTIONS))
    for name, classes in SECTIONS.items():
        if name not in raw:
            raise PipelineError(f"missing section '{name}' in {path}")
        for cls in classes:  # unknown keys against every key of the section
            parse_section(cls, raw[name], list(section_keys(name)))
    params = sections_from(raw, EVERY_CLASS, path)
    check_with_model(params.train, params.model.freeze)
    height, width = params.prepare.image_size
    too_wide = [k for k in params.augment.blur_kernels if k > min(height, width)]
    if too_wide:  # a box blur wider than the image averages it into one grey level (and costs k² per pixel)
        raise PipelineError(f"The 'augment.blur_kernels' parameter must list kernels no wider than the "
                            f"{height}×{width} prepared images (prepare.image_size: {min(height, width)} px). "
                            f"Got {list(params.augment.blur_kernels)} instead.")
    return params


def load_params(*sections: str, path: Path = PARAMS_FILE) -> Sections:
    """The whole file checked, and the named sections handed back (tests, benchmarks and tools; a
    stage reads only its own with checks.load_sections)."""
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        raise ValueError(f"no params section {unknown[0]!r}")  # a programming error, not a user one
    params = validate(read_yaml(path), path)
    return Sections({name: getattr(params, name) for name in sections})
