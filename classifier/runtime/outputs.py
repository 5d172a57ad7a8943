"""Writing outputs so that a reader finds the old file or the new one, never half of one.

Whose guarantee is whose:
- DVC (`dvc repro`, `dvc exp run`) removes a stage's outputs before it runs and records nothing in
  dvc.lock when it fails, so `dvc status` never calls a failed run's outputs up to date.
- This module adds what DVC does not give, for any writer (a stage run by hand, a tool):
  each output is built in a temporary sibling `.<name>.<pid>.<random>.tmp` and renamed into place
  only after the body has written every output, so a failure while writing (a full disk, Ctrl-C,
  a bug) replaces none, and a file is never seen half-written. Several outputs are switched in one
  rename each, not as one step: a kill between two leaves some new ones beside old ones, which
  differ from dvc.lock, so DVC reruns the stage.
- A run removes its own temporaries, and those a process no longer running left (kill -9); never a
  running process's.
- A full disk, a read-only folder or a missing permission is one PipelineError naming the output.
- params.yaml changed while the stage ran (two `dvc exp run` in one folder: DVC writes the refused
  one's -S values into it): nothing is switched in (expect_unchanged).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from classifier.runtime.errors import PipelineError, earlier_outputs, printable

_read_inputs: dict[tuple[Path, Path], bytes] = {}  # (working folder, input file) -> SHA-1 of what the stage read


def expect_unchanged(path: Path, content: bytes) -> None:
    """`content` of `path` (params.yaml) is what this stage works from: staged_outputs refuses to switch
    its outputs in if the file has changed since."""
    _read_inputs[(Path.cwd(), Path(path))] = hashlib.sha1(content).digest()


def _check_inputs_unchanged() -> None:
    for (folder, path), digest in _read_inputs.items():
        if folder != Path.cwd():
            continue  # read by an earlier stage run in this process (tests), in another project
        try:
            now = hashlib.sha1(path.read_bytes()).digest()
        except OSError:
            now = None
        if now != digest:
            raise PipelineError(f"{printable(path)} changed while this stage ran (another `dvc exp run` or an edit "
                                f"in this folder?): its new outputs were discarded "
                                f"({earlier_outputs('the earlier ones kept')}); check {printable(path)} and run again")


def process_running(pid: str) -> bool:
    """Whether process `pid` (digits) lives on this machine: this one counts."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process
    return True


def remove_stale_temporaries(target: Path) -> None:
    """Delete the `.<name>.<pid>.*.tmp` siblings of `target` whose process is gone (kill -9, power loss),
    and `..<name>.<pid>.*.tmp`: a file written whole inside one of them (write_json on a staged path)."""
    name = Path(target).name
    for stale in (*Path(target).parent.glob(f".{name}.*.tmp"), *Path(target).parent.glob(f"..{name}.*.tmp")):
        if not process_running(stale.name.lstrip(".")[len(name) + 1:].split(".")[0]):
            _remove(stale)


# errno -> why a write failed and what to do, in words a user can act on
_FREE, _WRITABLE = "free some space and rerun", "make it writable and rerun"
_WRITE_ERRORS = {errno.ENOSPC: ("disk full", _FREE), errno.EDQUOT: ("disk quota exceeded", _FREE),
                 errno.EACCES: ("permission denied", _WRITABLE), errno.EPERM: ("permission denied", _WRITABLE),
                 errno.EROFS: ("read-only file system", _WRITABLE)}
FULL_BYTES = 2**20  # a volume with less free space than this is the full one


def _on_full_volume(targets: tuple[Path, ...]) -> Path:
    """The first of `targets` whose volume is (nearly) full: ENOSPC names no file, and a stage's
    outputs may sit on several volumes (data/ mounted elsewhere)."""
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
def _write_errors_are_one_line(targets: tuple[Path, ...], before_switch: bool = True) -> Iterator[None]:
    """A full disk, a read-only folder or a missing permission while writing `targets`: one PipelineError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        target = _on_full_volume(targets) if full else targets[0]
        others = len(targets) - 1
        what = printable(target) + (f" and {others} other output(s)" if others else "")
        refused = Path(os.fsdecode(exc.filename)) if exc.filename else None
        if refused is not None and refused.name.startswith(".") and refused.name.endswith(".tmp"):
            refused = refused.parent  # our temporary sibling: the folder that refused it is the news
        where = f" ({printable(refused)})" if refused and not full else ""
        problem, remedy = _WRITE_ERRORS[exc.errno]
        kept = earlier_outputs("no output was changed" if others else f"the earlier {printable(target)}, if any, is "
                               f"unchanged") if before_switch else "rerun the stage: its outputs are a mix of two runs"
        raise PipelineError(f"{problem} while writing {what}{where}: {remedy} ({kept})") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _switch_in(target: Path, tmp: Path) -> None:
    """`tmp` takes `target`'s place: a file in one rename; a folder's old content is renamed aside
    first and removed after, so no instant is without the output."""
    if not tmp.is_dir() or not target.exists():
        os.replace(tmp, target)
        return
    aside = target.with_name(f".{target.name}.{os.getpid()}.old.tmp")
    os.replace(target, aside)
    os.replace(tmp, target)
    _remove(aside)


def _check_folder_can_be(target: Path) -> None:
    """Why `target`'s folder could not be made, when a file stands where one of its folders would."""
    in_the_way = next((p for p in (target.parent, *target.parent.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise PipelineError(f"cannot write {printable(target)}: {printable(in_the_way)} is a file, not a folder "
                            f"({earlier_outputs('no output was changed')})")


@contextlib.contextmanager
def staged_outputs(files: tuple[Path, ...] = (), dirs: tuple[Path, ...] = ()) -> Iterator[dict[Path, Path]]:
    """Yields {target: temporary sibling} (an empty folder for each of `dirs`, a path for each of
    `files`): write there. Every temporary is made first, so a read-only folder fails before any work;
    after the body, each target is replaced by its temporary; on any error none is, and the
    temporaries are removed."""
    targets = tuple(Path(t) for t in (*files, *dirs))
    staged: dict[Path, Path] = {}
    try:
        for index, target in enumerate(targets):
            with _write_errors_are_one_line((target,)):
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError):
                    _check_folder_can_be(target)  # a file where a folder would be: one line naming it
                    raise
                remove_stale_temporaries(target)
                staged[target] = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
                if index >= len(files):  # the umask's modes, as for any file the user makes
                    os.mkdir(staged[target], 0o777)
                else:
                    os.close(os.open(staged[target], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        with _write_errors_are_one_line(targets):
            yield staged
            _check_inputs_unchanged()
        with _write_errors_are_one_line(targets, before_switch=False):
            for target, tmp in staged.items():
                _switch_in(target, tmp)
    finally:
        for tmp in staged.values():
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


def write_json(path: Path, obj: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
