"""metrics/summary.json while a run is under way.

A stage whose outputs change what evaluate scores (ingest, split, prepare, augment, train) sets
metrics/summary.json aside as it starts, so that no table (`dvc exp show`, tools.report) shows a
running experiment its baseline's scores, and removes it when the stage succeeds: DVC runs
evaluate next whenever it finds the file missing. A stage that fails or is stopped puts the file
back (its outputs are unchanged too), so the git-tracked scores are not left deleted.
"""
from __future__ import annotations

import os

from .errors import settle_at_exit
from .outputs import remove_stale_temporaries
from .paths import SUMMARY_METRICS


def retire_summary() -> None:
    """Set metrics/summary.json aside: this run changes what evaluate scored, unless it fails."""
    remove_stale_temporaries(SUMMARY_METRICS)  # one a killed stage set aside
    if not SUMMARY_METRICS.exists():
        return
    summary = SUMMARY_METRICS.absolute()
    aside = summary.with_name(f".{summary.name}~before.{os.getpid()}.tmp")
    os.replace(summary, aside)

    def settle(succeeded: bool) -> None:
        if not aside.exists():
            return
        if succeeded or summary.exists():
            aside.unlink()
        else:
            os.replace(aside, summary)
    settle_at_exit(settle)
