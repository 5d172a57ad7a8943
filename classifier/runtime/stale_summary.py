"""metrics/summary.json while a run is under way.

A stage whose outputs change what evaluate scores (ingest, split, prepare, augment, train) sets
metrics/summary.json aside as it starts, so that no table (`dvc exp show`, tools.report) shows a
running experiment its baseline's scores, and removes it when the stage succeeds: DVC runs evaluate
next whenever the file is missing. A stage that fails or is stopped puts the file back: the
git-tracked scores still describe the outputs DVC last recorded.
"""
from __future__ import annotations

import os

from classifier.runtime.errors import settle_at_exit
from classifier.runtime.outputs import remove_stale_temporaries
from classifier.runtime.paths import SUMMARY_METRICS


def retire_summary() -> None:
    """Set metrics/summary.json aside until the stage ends: gone if it succeeds, back if it fails."""
    remove_stale_temporaries(SUMMARY_METRICS)  # one a killed stage set aside
    if not SUMMARY_METRICS.exists():
        return
    summary = SUMMARY_METRICS.absolute()
    aside = summary.with_name(f".{summary.name}.{os.getpid()}.aside.tmp")
    os.replace(summary, aside)

    def settle(succeeded: bool) -> None:
        if summary.exists() or succeeded:
            aside.unlink(missing_ok=True)
        elif aside.exists():
            os.replace(aside, summary)
    settle_at_exit(settle)
