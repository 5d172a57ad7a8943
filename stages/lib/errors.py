"""The one error type a user can cause, and the runner that turns it into a one-line message.

Every stage module ends with `run_stage(main)`: a `PipelineError` (bad param, unreadable image,
missing folder, full disk, NaN loss) prints `error: <message>` on stderr and exits 1 without a
traceback; Ctrl-C prints one line and exits 130 (the shell's code for SIGINT); anything else is a
bug and keeps its traceback. In a worker started by torchrun (train.processes > 1) the message goes to
torchrun's error file instead, and the launcher prints it once (stages/lib/distributed.py).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, NoReturn


class PipelineError(ValueError):
    """A problem with the user's input or params; its message names the file or key."""


def run_stage(main: Callable[[], None]) -> NoReturn:
    """Run a stage's main(); exit 0 on success, 1 with a one-line message on PipelineError."""
    try:
        main()
    except PipelineError as exc:
        message = " ".join(str(exc).split())  # always one line
        if _leave_for_launcher(message):
            sys.exit(1)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        if "TORCHELASTIC_ERROR_FILE" in os.environ and "RANK" in os.environ:
            sys.exit(130)  # a torchrun worker: its launcher says it once for all
        # Outputs are written to temporary siblings: the ones in progress were removed on the way out.
        print("error: interrupted (Ctrl-C); outputs being written were discarded", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)


def _leave_for_launcher(message: str) -> bool:
    """In a torchrun worker: write `message` where torchrun's agent reads a worker's failure; else False."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or "RANK" not in os.environ:
        return False
    with open(path, "w") as f:
        json.dump({"message": message, "timestamp": int(time.time())}, f)
    return True
