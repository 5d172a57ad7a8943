"""Writing a stage's outputs so that a failure never leaves half of one.

Every writer builds its output in a temporary sibling (`.<name>.*.tmp`) and renames it into place.
staged_outputs makes every temporary first, lets the stage write them all, and only then renames
each into place, one rename per output: a failure while writing (a full disk, Ctrl-C, a bug) leaves
every earlier output as it was. The renames themselves are several steps; a journal of them lets a
failure, a signal or (by the next run of any stage) a kill -9 between two of them undo the ones
done, so a reader finds all the new outputs or all the old ones, never a mix. Temporaries a killed
stage left are removed when the output is next written. Outputs respect the umask; a full
disk, a read-only folder or a missing permission is one PipelineError naming the output.
live_outputs rewrites progress files while a stage runs (what `dvc exp show` reads from a running
experiment). Used by every stage and by the tools that write files.
"""
from __future__ import annotations

import contextlib
import errno
import filecmp
import hashlib
import json
import os
import shutil
import signal
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from classifier.runtime.errors import PipelineError, printable


_read_inputs: dict[tuple[Path, Path], bytes] = {}  # (working folder, input file) -> SHA-1 of what the stage read


def expect_unchanged(path: Path, content: bytes) -> None:
    """`content` of `path` (params.yaml) is what this stage works from: staged_outputs refuses to switch
    its outputs in if the file has changed since (two `dvc exp run` at once in one folder: DVC lets
    the refused second one write its -S values into params.yaml, and the first would credit its
    results to them)."""
    _read_inputs[(Path.cwd(), Path(path))] = hashlib.sha1(content).digest()


def _check_inputs_unchanged() -> None:
    here = Path.cwd()
    for (folder, path), digest in _read_inputs.items():
        if folder != here:
            continue  # read by an earlier stage run in this process (tests), in another project
        try:
            now = hashlib.sha1(path.read_bytes()).digest()
        except OSError:
            now = None
        if now != digest:
            raise PipelineError(f"{printable(path)} changed while this stage ran (another `dvc exp run` or an edit "
                                f"in this folder?): its new outputs were discarded and the earlier ones kept; "
                                f"check {printable(path)} and run again")


def remove_stale_temporaries(target: Path) -> None:
    """Delete `.<name>.*.tmp` siblings of `target` that a killed run (kill -9, power loss) left, and
    the `.<name>~before.<pid>.tmp` that live_outputs set aside in a process no longer running; first
    undo any switch a killed run left half done (its old outputs wait among those siblings)."""
    undo_interrupted_switches()
    target = Path(target)
    # ..<name>.*.tmp.*.tmp: a file written atomically inside one of those (write_json on a staged path)
    for stale in (*target.parent.glob(f".{target.name}.*.tmp"), *target.parent.glob(f"..{target.name}.*.tmp")):
        _remove(stale)
    for aside in target.parent.glob(f".{target.name}~before.*.tmp"):
        if not process_running(aside.name.rsplit(".", 2)[-2]):
            _remove(aside)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """A clean-up that a signal must not cut short (a failure's clean-up, then torchrun's SIGTERM in the
    middle of it, left temporaries): SIGINT, SIGTERM and SIGHUP are held until it is done, and arrive
    right after it."""
    if threading.current_thread() is not threading.main_thread():  # only its handlers can be changed
        yield
        return
    # Handlers, not a signal mask: a mask holds signals for one thread only, and torch's, gloo's or
    # execnet's threads would take them (Python then runs the handler in the main thread all the same).
    caught: list[tuple[int, Any]] = []
    held = {signum: signal.signal(signum, lambda number, frame: caught.append((number, frame)))
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)
        if caught:
            signum, frame = caught[0]
            if callable(held[signum]):
                held[signum](signum, frame)  # raises Stopped or KeyboardInterrupt, now
            elif held[signum] == signal.SIG_DFL:
                os.kill(os.getpid(), signum)  # its default action: the process ends


def process_running(pid: str) -> bool:
    """Whether process `pid` (digits) lives on this machine: this one counts."""
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process
    return True


# While a stage switches several outputs in, the journal of the switch: the moves it makes, so that a
# run killed between two renames (kill -9, power loss) is undone by the next run of any stage.
JOURNAL = ".outputs-switch.{pid}.tmp"


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _switch(staged: dict[Path, Path]) -> None:
    """Replace each target by its temporary. One file: one rename, atomic. Several outputs, or a folder:
    the old ones are renamed aside and the new ones into place, one by one, with a journal of the
    moves written first; a failure or a signal on the way undoes the moves done, and so does the next
    run of any stage after a kill (undo_interrupted_switches). The journal's removal is the moment
    the new outputs stand together; the old ones are deleted after it."""
    if len(staged) == 1 and not any(tmp.is_dir() for tmp in staged.values()):
        target, tmp = next(iter(staged.items()))
        os.replace(tmp, target)
        return
    moves = [{"target": str(target.absolute()), "new": str(tmp.absolute()),
              "aside": str(target.absolute().with_name(f".{target.name}.{os.getpid()}.old.tmp"))
              if _exists(target) else None} for target, tmp in staged.items()]
    journal = Path(JOURNAL.format(pid=os.getpid()))
    writing = journal.with_name(f".outputs-switch-writing.{os.getpid()}.tmp")
    writing.write_text(json.dumps(moves))
    os.replace(writing, journal)
    try:
        for move in moves:
            if move["aside"]:
                os.replace(move["target"], move["aside"])
            os.replace(move["new"], move["target"])
    except BaseException:
        with _uninterrupted():
            _undo(moves)
            journal.unlink()
        raise
    journal.unlink()  # switched: from here on the new outputs stand, all of them
    for move in moves:
        if move["aside"]:
            _remove(Path(move["aside"]))


def _undo(moves: list[dict]) -> None:
    """Put back what a switch moved, from any point it stopped at (and again, if this is stopped too):
    a new output in place goes, the old one set aside returns, the remaining temporaries go."""
    for move in reversed(moves):
        target, new = Path(move["target"]), Path(move["new"])
        aside = Path(move["aside"]) if move["aside"] else None
        if not _exists(new) and _exists(target) and (aside is None or _exists(aside)):  # the new one is in place
            undone = target.with_name(f".{target.name}.{os.getpid()}.undone.tmp")
            os.replace(target, undone)
            _remove(undone)
        if aside is not None and _exists(aside):
            os.replace(aside, target)
        if _exists(new):
            _remove(new)


def undo_interrupted_switches() -> None:
    """Undo the switches that killed runs left half done in this folder (their journals), so that
    their outputs are all the earlier run's again, before this run touches any output."""
    for journal in Path(".").glob(JOURNAL.format(pid="*")):
        pid = journal.name.split(".")[2]
        if pid != str(os.getpid()) and process_running(pid):
            continue  # a stage switching right now
        try:
            moves = json.loads(journal.read_text())
        except (OSError, ValueError):
            continue  # removed meanwhile by another run's undo
        _undo(moves)
        journal.unlink(missing_ok=True)


# errno -> why a write failed and what to do, in words a user can act on
_FREE, _WRITABLE = "free some space and rerun", "make it writable and rerun"
_WRITE_ERRORS = {errno.ENOSPC: ("disk full", _FREE), errno.EDQUOT: ("disk quota exceeded", _FREE),
                 errno.EACCES: ("permission denied", _WRITABLE), errno.EPERM: ("permission denied", _WRITABLE),
                 errno.EROFS: ("read-only file system", _WRITABLE)}


FULL_BYTES = 2**20  # a volume with less free space than this is the full one


def _on_full_volume(targets: tuple[Path, ...]) -> Path:
    """The first of `targets` whose volume is (nearly) full: a write's ENOSPC names no file, and the
    outputs of a stage may sit on several volumes (data/ mounted elsewhere)."""
    for target in targets:
        folder = next((p for p in (target.parent, *target.parent.parents) if p.exists()), Path("."))
        try:
            stats = os.statvfs(folder)
        except OSError:
            continue
        if stats.f_bavail * stats.f_frsize < FULL_BYTES:
            return target
    return targets[0]


@contextlib.contextmanager
def _write_errors_are_one_line(target: Path, others: tuple[Path, ...] = ()) -> Iterator[None]:
    """A full disk, a read-only folder or a missing permission while writing `target` (and the
    outputs `others` besides): one PipelineError, naming the output on the full volume."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and others:
            full = _on_full_volume((target, *others))
            target, others = full, tuple(t for t in (target, *others) if t != full)
        what = printable(target) + (f" and {len(others)} other output(s)" if others else "")
        refused = Path(os.fsdecode(exc.filename)) if exc.filename else None
        if refused is not None and refused.name.startswith(".") and refused.name.endswith(".tmp"):
            refused = refused.parent  # our temporary sibling: the folder that refused it is the news
        where = f" ({printable(refused)})" if refused and exc.errno not in (errno.ENOSPC, errno.EDQUOT) else ""
        problem, remedy = _WRITE_ERRORS[exc.errno]
        earlier = f"the earlier {printable(target)}, if any, is unchanged" if not others else "no output was changed"
        raise PipelineError(f"{problem} while writing {what}{where}: {remedy} ({earlier})") from None


def _temporary_name(target: Path) -> Path:
    """A fresh `.<name>.<random>.tmp` beside `target` (not made yet); the folder made, stale ones removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")


def _create(tmp: Path, is_dir: bool) -> None:
    """An empty folder or file with the umask's mode (as any file the user makes)."""
    if is_dir:
        os.mkdir(tmp, 0o777)
    else:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


_changed = False  # whether a staged_outputs of this run switched in other bytes than it replaced


def outputs_changed(reset: bool = False) -> bool:
    """Whether this run's staged outputs replaced anything with other bytes (stale_summary: a stage
    that wrote what was there changed nothing evaluate scored). `reset`: a run starts."""
    global _changed
    changed, _changed = _changed, False if reset else _changed
    return changed


def _same_content(old: Path, new: Path) -> bool:
    """Whether `new` (a file or a folder) holds exactly `old`'s bytes: sizes first, so that a changed
    output costs a directory listing, and only an unchanged one is read through."""
    if old.is_dir() != new.is_dir() or not old.exists():
        return False
    if not new.is_dir():
        return old.stat().st_size == new.stat().st_size and filecmp.cmp(old, new, shallow=False)
    names = sorted(p.relative_to(old) for p in old.rglob("*"))
    if names != sorted(p.relative_to(new) for p in new.rglob("*")):
        return False
    files = [name for name in names if (new / name).is_file()]
    return (all((old / n).stat().st_size == (new / n).stat().st_size for n in files)
            and all(filecmp.cmp(old / n, new / n, shallow=False) for n in files))


@contextlib.contextmanager
def staged_outputs(files: tuple[Path, ...] = (), dirs: tuple[Path, ...] = ()) -> Iterator[dict[Path, Path]]:
    """A stage's outputs are all written before any is switched in; a failure while writing changes none.

    Yields {target: temporary sibling} (an empty folder for each of `dirs`, a path for each of
    `files`): write there. On success every target is replaced by its temporary, one rename each,
    after everything was written; on any error (a full disk, Ctrl-C, a bug) every target keeps its
    old content and the temporaries are removed. Every temporary is made before the body runs, so a
    read-only folder fails before any work is done. The renames are not one atomic step, but their
    journal makes them one: a kill -9 between two of them is undone by the next run (_switch)."""
    targets = [(Path(t), False) for t in files] + [(Path(t), True) for t in dirs]
    staged: dict[Path, Path] = {}
    try:
        for target, is_dir in targets:
            with _write_errors_are_one_line(target):
                # Named before it is made: a signal in between leaves nothing the clean-up below misses.
                staged[target] = _temporary_name(target)
                _create(staged[target], is_dir)
        with _write_errors_are_one_line(targets[0][0], tuple(t for t, _ in targets[1:])):
            yield staged
            _check_inputs_unchanged()
            global _changed
            _changed = _changed or not all(_same_content(target, tmp) for target, tmp in staged.items())
            _switch(staged)  # written: all switched in, or (a failure, a signal, a kill) none
    finally:
        with _uninterrupted():
            for tmp in staged.values():
                if tmp.exists():
                    _remove(tmp)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target`."""
    with staged_outputs(dirs=(Path(target),)) as staged:
        yield staged[Path(target)]


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed to `target`."""
    with staged_outputs(files=(Path(target),)) as staged:
        yield staged[Path(target)]


@contextlib.contextmanager
def live_outputs() -> Iterator[Callable[[Path], contextlib.AbstractContextManager[Path]]]:
    """Outputs a stage rewrites while it runs: progress that `dvc exp show` and `dvc plots diff`
    read from a running experiment's workspace. Yields `rewrite(target)`, a context giving a
    temporary path that replaces `target` atomically on exit (a reader never sees half a file).

    If the stage then fails, each target is put back as it was before the stage started (or
    removed), so a failed run leaves no progress of its own beside the last run's outputs. The
    earlier file waits as `.<name>~before.<pid>.tmp` meanwhile."""
    saved: dict[Path, Path | None] = {}

    @contextlib.contextmanager
    def rewrite(target: Path) -> Iterator[Path]:
        target = Path(target)
        if target not in saved:
            # Recorded before the move: a signal in between leaves nothing the roll-back below misses.
            saved[target] = target.with_name(f".{target.name}~before.{os.getpid()}.tmp") if target.exists() else None
            if saved[target] is not None:
                with _write_errors_are_one_line(target):
                    os.replace(target, saved[target])
        with atomic_file(target) as tmp:
            yield tmp

    try:
        yield rewrite
    except BaseException:
        with _uninterrupted():
            for target, aside in saved.items():
                if aside is None:
                    _remove(target)  # there was none before this run
                elif aside.exists():
                    os.replace(aside, target)
                # else: stopped before the move, `target` is still the earlier file
        raise
    for aside in saved.values():
        if aside is not None:
            _remove(aside)


def write_json(path: Path, obj: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
