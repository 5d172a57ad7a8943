"""metrics/summary.json while a run is under way.

A stage whose outputs change what evaluate scores (ingest, split, augment, train) removes
metrics/summary.json as it starts, so that no table (`dvc exp show`, tools.report) shows a running
experiment its baseline's scores. DVC runs evaluate next whenever it finds the file missing.
"""
from __future__ import annotations

from .paths import SUMMARY_METRICS


def retire_summary() -> None:
    """Remove metrics/summary.json: this run changes what evaluate scored."""
    SUMMARY_METRICS.unlink(missing_ok=True)
