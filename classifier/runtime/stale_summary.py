"""metrics/summary.json while a run is under way.

A stage whose outputs change what evaluate scores (ingest, split, prepare, augment, train) sets
metrics/summary.json aside as it starts, so that no table (`dvc exp show`, tools.report) shows a
running experiment its baseline's scores, and removes it when the stage succeeds: DVC runs
evaluate next whenever it finds the file missing. A stage that fails or is stopped puts the file
back (its outputs are unchanged too), and so does one that wrote the very bytes its outputs held
(a data stage rerun for a param that changed nothing): the git-tracked scores still describe them.
"""
from __future__ import annotations

import os

from classifier.runtime.errors import settle_at_exit
from classifier.runtime.outputs import outputs_changed, remove_stale_temporaries
from classifier.runtime.paths import SUMMARY_METRICS


def retire_summary() -> None:
    """Set metrics/summary.json aside: this run changes what evaluate scored, unless it fails."""
    remove_stale_temporaries(SUMMARY_METRICS)  # one a killed stage set aside
    outputs_changed(reset=True)
    if not SUMMARY_METRICS.exists():
        return
    summary = SUMMARY_METRICS.absolute()
    aside = summary.with_name(f".{summary.name}~before.{os.getpid()}.tmp")
    os.replace(summary, aside)

    def settle(succeeded: bool) -> None:
        if not aside.exists():
            return
        if summary.exists() or (succeeded and outputs_changed()):
            aside.unlink()
        else:
            os.replace(aside, summary)
    settle_at_exit(settle)
