"""The one error type a user can cause, and the runner that turns it into a one-line message.

Every stage module ends with `run_stage(main)`: a `PipelineError` (bad param, unreadable image,
missing folder, full disk, NaN loss) prints `error: <message>` on stderr and exits 1 without a
traceback; Ctrl-C prints one line and exits 130 (the shell's code for SIGINT); anything else is a
bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn


class PipelineError(ValueError):
    """A problem with the user's input or params; its message names the file or key."""


def run_stage(main: Callable[[], None]) -> NoReturn:
    """Run a stage's main(); exit 0 on success, 1 with a one-line message on PipelineError."""
    try:
        main()
    except PipelineError as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        # Outputs are written to temporary siblings: the ones in progress were removed on the way out.
        print("error: interrupted (Ctrl-C); outputs being written were discarded", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
