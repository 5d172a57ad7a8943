"""The one error type a user can cause, and the runner that turns every way a stage ends into one line.

Every stage and tool module ends with `run_stage(main)`:
- a `PipelineError` (bad param, unreadable image, missing folder, full disk, NaN loss) prints
  `error: <message>` on stderr and exits 1 without a traceback;
- an input another stage makes that is missing (a fresh clone, a stage run by hand out of order)
  is one line naming the file and the `dvc repro <stage>` that makes it, exit 1;
- Ctrl-C, SIGTERM and SIGHUP print one line naming the signal and exit 128 + its number; the
  outputs being written (temporary siblings) are removed on the way out; the same while the stage
  is still importing its modules (guard_start);
- anything else is a bug and keeps its traceback.
train passes `worker=`, the torchrun worker's side of these (classifier/training/distributed.py): in a
data-parallel worker the message goes to torchrun's error file instead, and the launcher prints it
once.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Callable, NoReturn, Protocol

from classifier.runtime import paths


def printable(path: Path | str) -> str:
    """A path as text that prints and encodes: bytes of a name that are not UTF-8 become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class PipelineError(ValueError):
    """A problem with the user's input or params; its message names the file or key."""


DISCARDED = "outputs being written were discarded"
CLONE_VARIABLE = "IMAGE_PIPELINE_CLONE"  # set by a Ray node's run (classifier/experiments/cluster_node.py): a clone of its own


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that the same
    clean-up runs (temporary outputs removed); `note` says what was left (a tool's own words)."""

    def __init__(self, signum: int, note: str = DISCARDED) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.note = signum, note


def signal_name(exc: KeyboardInterrupt) -> tuple[str, int]:
    """('Ctrl-C', 2) or ('SIGTERM', 15): how the user stopped the run."""
    if isinstance(exc, Stopped) and exc.signum != signal.SIGINT:
        return signal.Signals(exc.signum).name, exc.signum
    return "Ctrl-C", signal.SIGINT


class Worker(Protocol):
    """How a process started by another (a torchrun worker) ends: classifier/training/distributed.py's TorchrunWorker."""

    def active(self) -> bool: ...                        # this process is such a worker
    def start(self) -> None: ...                         # die with the launcher
    def report(self, message: str, kind: str) -> bool: ...  # leave the one-line error for the launcher
    def lost_contact(self, exc: Exception) -> bool: ...  # exc: another process of the run went away


def missing_input(exc: FileNotFoundError) -> PipelineError | None:
    """A missing file that a pipeline stage makes: the one line saying which stage makes it."""
    name = Path(os.fsdecode(exc.filename)) if exc.filename else None
    if name is None:
        return None
    if name.is_absolute():
        try:
            name = name.relative_to(Path.cwd())
        except ValueError:
            return None
    for output, stage in paths.MADE_BY.items():
        if name == output or output in name.parents:
            return PipelineError(f"{name} not found: it is made by the {stage} stage; run `dvc repro {stage}` "
                                 f"(or `make repro`) first")
    return None


TERMINATE = (signal.SIGTERM, signal.SIGHUP)   # a stop sent to the process (Ctrl-C aside)
EVERY_STOP = (signal.SIGINT, *TERMINATE)


def _handle(handler, signals: tuple[signal.Signals, ...]) -> None:
    for signum in signals:
        signal.signal(signum, handler)


def guard_start() -> None:
    """Called by stages/__init__.py and tools/__init__.py when Python starts one of them with -m: until
    run_stage takes over, Ctrl-C, SIGTERM and SIGHUP (e.g. while torch imports, the first seconds)
    end the process with one line and 128 + n, not a traceback or silence. Nothing is written yet."""
    def starting(signum: int, _frame) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        _settle_all(False)
        print(f"error: interrupted ({name}) while starting; nothing was written", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    _handle(starting, EVERY_STOP)


_settle: list[Callable[[bool], None]] = []


def settle_at_exit(callback: Callable[[bool], None]) -> None:
    """run_stage calls `callback(succeeded)` as the stage ends, last registered first: e.g. a file set
    aside at the start is put back when the stage fails (classifier/runtime/stale_summary.py)."""
    _settle.append(callback)


def _settle_all(succeeded: bool) -> None:
    while _settle:
        _settle.pop()(succeeded)


def _run_settled(main: Callable[[], None]) -> None:
    try:
        main()
    except BaseException:
        _settle_all(False)
        raise
    # main() returned: its outputs are in place. A signal from here on ends the process at once (it
    # must not outlive a launcher that stops it) but as the success it is: a SIGTERM handled after
    # main() once made a finished run exit 143 after its success line.
    _handle(_exit_succeeded, EVERY_STOP)
    _settle_all(True)


def _exit_succeeded(_signum: int, _frame) -> None:
    _settle_all(True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def _raise_stopped(signum: int, _frame) -> None:
    # Once: a second SIGTERM (torchrun's agent and the user both send one) must not interrupt the
    # clean-up the first one started (temporary outputs being removed).
    _handle(signal.SIG_IGN, TERMINATE)
    raise Stopped(signum)


def run_stage(main: Callable[[], None], worker: Worker | None = None) -> NoReturn:
    """Run a stage's main(); exit 0 on success, 1 with a one-line message on PipelineError, 128 + n
    with one line on a signal. `worker`: how a process started as one of several (train's torchrun
    workers) reports instead."""
    in_worker = worker is not None and worker.active()
    if in_worker:
        worker.start()
    # Each line as it happens, also through a pipe (`dvc queue logs -f`), whatever PYTHONUNBUFFERED is.
    if hasattr(sys.stdout, "reconfigure"):  # a real text stream (a test's capture may not be one)
        sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # guard_start's, until here
    _handle(_raise_stopped, TERMINATE)
    succeeded = False
    try:
        _run_settled(main)
        succeeded = True
    except PipelineError as exc:
        _quiet_signals()
        _fail(str(exc), worker if in_worker else None)
    except FileNotFoundError as exc:
        _quiet_signals()
        error = missing_input(exc)
        if error is None:
            raise
        _fail(str(error), worker if in_worker else None)
    except Exception as exc:
        _quiet_signals()
        if not (in_worker and worker.lost_contact(exc)):
            raise  # a bug: its traceback
        # Another process died first (a kill, a crash): its launcher names that one, not this echo.
        worker.report(f"lost contact with the other training processes ({' '.join(str(exc).split())[:120]})",
                      kind="lost")
        sys.exit(1)
    except KeyboardInterrupt as exc:
        _quiet_signals()
        name, signum = signal_name(exc)
        if in_worker:
            sys.exit(128 + signum)  # its launcher says it once for all
        # Outputs are written to temporary siblings: the ones in progress were removed on the way out.
        print(f"error: interrupted ({name}); {getattr(exc, 'note', DISCARDED)}{after_a_workspace_experiment()}",
              file=sys.stderr)
        sys.exit(128 + signum)
    finally:
        if not succeeded:  # a finished run exits 0 on a late signal too (_run_settled)
            _quiet_signals()
    # Python's shutdown resets a signal's handler to the default action (death by the signal, 143 after
    # the success line), but leaves an ignored signal ignored: the last moments of a finished run.
    _handle(signal.SIG_IGN, EVERY_STOP)
    sys.exit(0)


def _quiet_signals() -> None:
    """From here the process only exits: a late SIGTERM (torchrun's agent stopping a worker whose peer
    died) must not raise in an error handler or inside interpreter shutdown, printing a traceback."""
    _handle(_exit_quietly, TERMINATE)


def _exit_quietly(signum: int, _frame) -> None:
    os._exit(128 + signum)


def _fail(message: str, worker: Worker | None) -> NoReturn:
    message = " ".join(message.split())  # always one line
    if worker is None or not worker.report(message, kind="pipeline"):
        print(f"error: {message}{after_a_workspace_experiment()}", file=sys.stderr)
    sys.exit(1)


def earlier_outputs(by_hand: str) -> str:
    """What a failed stage left of its earlier outputs: `by_hand` (what the stage kept) when run by
    hand; under `dvc repro` or `dvc exp run` (DVC gives a stage DVC_STAGE), none: DVC removed them
    before the stage ran, and a workspace experiment's line ends with the way back anyway."""
    if not os.environ.get("DVC_STAGE"):
        return by_hand
    removed = "DVC removed this stage's outputs before it ran"
    return removed if after_a_workspace_experiment() else f"{removed}: `dvc checkout` brings back the last run's"


def after_a_workspace_experiment() -> str:
    """Under `dvc exp run` in the workspace (DVC gives a stage DVC_EXP_NAME, and DVC_ROOT, the
    project's root, where it runs; a queued or --temp one runs in a copy elsewhere), DVC has set the
    experiment's params in params.yaml and removed this stage's outputs before it ran, and dvc.lock
    holds what ran before: the way back to the last commit's, to end the line with."""
    root = os.environ.get("DVC_ROOT")
    if (not os.environ.get("DVC_EXP_NAME") or not root or Path.cwd().resolve() != Path(root).resolve()
            or os.environ.get(CLONE_VARIABLE)):
        return ""
    return "; the workspace holds this experiment's params and lacks this stage's outputs: `make restore` brings " \
           "back the last commit's"
