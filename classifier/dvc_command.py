"""`dvc` run from the tools (report, sweep) as a user would: this interpreter's DVC, its output, and
any failure as one line."""
from __future__ import annotations

import subprocess
import sys

from classifier.errors import PipelineError


def run_dvc(*args: str, timeout: float | None = None, why_slow: str = "", context: str = "") -> str:
    """`dvc <args>`'s stdout. A failure or a `timeout` (seconds) is a PipelineError naming the command,
    with DVC's own message on one line, then `why_slow` (for a timeout) and `context`."""
    command = f"dvc {' '.join(args)}"
    try:
        result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"{command} did not answer in {timeout:g} s{why_slow}: run again{context}") from None
    if result.returncode != 0:
        message = " ".join((result.stderr or result.stdout).split())[:300]
        raise PipelineError(f"{command} failed: {message}{context}")
    return result.stdout
