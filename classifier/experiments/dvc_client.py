"""The tools' one way to DVC (report, tune, cluster): this interpreter's `dvc` through its command line,
DVC's public interface, as a user would run it; its output, and any failure as one line. (Only the
cluster's node side, which runs without this project installed, calls `dvc` itself.)"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
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


_STATES = {"Queued": "queued", "Running": "running", "Success": "done", "Failed": "failed"}
_PRECEDENCE = ("done", "failed", "running", "queued")


def queue_states() -> dict[str, str]:
    """Experiment name -> queued, running, failed or done: DVC's queue as `dvc queue status` tables it
    (columns Task, Name, Created, Status, read by the header's positions: a name may be empty). A name
    listed twice (queued again) takes the state that is still to end: queued, then running."""
    states: dict[str, str] = {}
    lines = run_dvc("queue", "status").splitlines()
    header = next((line for line in lines if line.split()[:1] == ["Task"]), None)
    if header is None:
        return states  # "No experiment tasks in the queue."
    name_at, created_at = header.index("Name"), header.index("Created")
    for line in lines[lines.index(header) + 1:]:
        words = line.split()
        if not words or words[-1] not in _STATES:
            continue
        name, state = line[name_at:created_at].strip(), _STATES[words[-1]]
        if name and _PRECEDENCE.index(state) >= _PRECEDENCE.index(states.get(name, "done")):
            states[name] = state
    return states


def start_workers(jobs: int) -> None:
    """`dvc queue start -j JOBS`: the workers not already running are started. Its output goes to a
    file, not a pipe: DVC forks a daemon per worker that keeps the files it inherits open while the
    worker lives, and whoever reads a pipe of ours would wait for the workers to exit."""
    with tempfile.TemporaryFile("w+") as errors:
        done = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        if done.returncode != 0:
            errors.seek(0)
            raise PipelineError(f"dvc queue start -j {jobs} failed: {' '.join(errors.read().split())[:300]}")


def taken_names() -> set[str]:
    """Every experiment name in this repo: done (on any commit; `dvc exp list`), queued, running or
    failed (`dvc queue status`)."""
    if not os.path.isdir(".dvc"):
        raise PipelineError(f"{os.getcwd()} is not a DVC repository: run the search from the project root")
    done = run_dvc("exp", "list", "--all-commits", "--name-only").split()
    return {name for name in (*done, *queue_states()) if name}
