"""`dvc` run from the tools (report, tune, cluster) as a user would: this interpreter's DVC, its output, and
any failure as one line."""
from __future__ import annotations

import subprocess
import sys
import time

from classifier.runtime.errors import PipelineError


# DVC's words for a lock another dvc process holds for a moment (a queue worker taking the next
# experiment while a tool queues one): asked again, not an error.
BUSY = "is busy, it is being blocked by"
BUSY_TRIES = 40
BUSY_WAIT_SECONDS = 0.5


def run_dvc(*args: str, timeout: float | None = None, why_slow: str = "", context: str = "") -> str:
    """`dvc <args>`'s stdout. A failure or a `timeout` (seconds) is a PipelineError naming the command,
    with DVC's own message on one line, then `why_slow` (for a timeout) and `context`. A lock another
    dvc process holds is waited for (up to about 20 s)."""
    command = f"dvc {' '.join(args)}"
    for _ in range(BUSY_TRIES):
        try:
            result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True,
                                    timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PipelineError(f"{command} did not answer in {timeout:g} s{why_slow}: run again{context}") from None
        if result.returncode == 0 or BUSY not in result.stderr + result.stdout:
            break
        time.sleep(BUSY_WAIT_SECONDS)
    if result.returncode != 0:
        message = " ".join((result.stderr or result.stdout).split())[:300]
        raise PipelineError(f"{command} failed: {message}{context}")
    return result.stdout
