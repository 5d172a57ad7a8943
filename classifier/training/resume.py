"""Resuming an interrupted train stage from its last finished epoch.

After every epoch train keeps the whole state of its run in one file: the weights, the optimiser's,
the schedule's and the moving average's state, the best epoch so far and its weights, the history,
the phase of two-phase fine-tuning and every random stream of every process (training_loop.fit). The
next run with the same identity (the same model, train and online-augment params, the same input
data, the same training code, the same kind of device) continues after that epoch and ends with the
bytes an uninterrupted run writes. Anything else starts afresh and says why in one line; so does a
state file that cannot be read.

Where: the folder $TRAIN_STATE_DIR names (a network folder every machine mounts lets one machine
resume what another began), else the project's .dvc/tmp/train-state, also for a queued experiment,
which runs in a temporary copy of the project under .dvc/tmp/exps. One file per identity, written
atomically, with a small JSON beside it that says whose it is; removed when train completes. At most
KEPT states stay (the oldest go first). The state is no DVC output: DVC's run cache and
`dvc exp show` see nothing of it, and resuming changes no result, so it is no param either.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from classifier.runtime.errors import DISCARDED, PipelineError, printable
from classifier.runtime.outputs import atomic_file, process_running, write_json

STATE_VARIABLE = "TRAIN_STATE_DIR"
MINUTES_VARIABLE = "TRAIN_STATE_MINUTES"  # within a long epoch, a state about this often (default 10; 0: epoch ends)
DEFAULT_MINUTES = 10.0
FORMAT = 1
KEPT = 8
QUEUE_FOLDER = (".dvc", "tmp", "exps")  # where DVC runs a queued experiment: <project>/.dvc/tmp/exps/<tmp>


def project_root(cwd: Path | None = None) -> Path:
    """The project a run belongs to: the folder above .dvc/tmp/exps for a queued experiment, else `cwd`."""
    cwd = (cwd or Path.cwd()).resolve()
    for folder in cwd.parents:
        if folder.parts[-3:] == QUEUE_FOLDER:
            return folder.parent.parent.parent
    return cwd


def state_folder(cwd: Path | None = None) -> Path | None:
    """Where train keeps its states: $TRAIN_STATE_DIR, else <project>/.dvc/tmp/train-state; None
    outside a DVC project (nothing is kept then)."""
    configured = os.environ.get(STATE_VARIABLE)
    if configured:
        return Path(configured)
    root = project_root(cwd)
    return root / ".dvc" / "tmp" / "train-state" if (root / ".dvc").is_dir() else None


def state_every_seconds() -> float:
    """$TRAIN_STATE_MINUTES in seconds: how often train keeps its state within an epoch that lasts."""
    text = os.environ.get(MINUTES_VARIABLE, "").strip()
    try:
        minutes = float(text) if text else DEFAULT_MINUTES
    except ValueError:
        minutes = -1.0
    if not 0 <= minutes < float("inf"):
        raise PipelineError(f"{MINUTES_VARIABLE} must be a number of minutes >= 0 (0: a state at epoch ends only). "
                            f"Got {text!r} instead.")
    return minutes * 60


def where(epoch: int, step: int, steps: int, total_epochs: int) -> str:
    """'epoch 37 of 200', or within an epoch 'epoch 38 of 200 at step 120 of 400'."""
    return (f"epoch {epoch} of {total_epochs}" if not step else
            f"epoch {epoch + 1} of {total_epochs} at step {step} of {steps}")


def data_digest(folders: tuple[Path, ...]) -> str:
    """A hash of every file under `folders` (names and bytes): what train reads. A missing folder counts
    as empty (models/pretrained in a project with no weights files)."""
    digest = hashlib.sha1()
    for folder in folders:
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).is_dir() else []
        for path in files:
            digest.update(os.fsencode(path.as_posix()) + b"\0")
            with open(path, "rb") as handle:
                while chunk := handle.read(2**22):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Identity:
    """What makes two train runs the same run: a state is used only by a run of the same identity."""
    params: dict   # {section: plain values} of the model, train and online-augment params
    data: str      # data_digest of train's input folders
    code: str      # source_files.code_digest of stages.train
    device: str    # cpu or cuda: the arithmetic differs

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def difference(self, other: dict) -> str:
        """What differs in `other` (an Identity as a dict), in words: 'train.lr 0.1, now 0.05'."""
        changed = [f"{section}.{key} {other['params'].get(section, {}).get(key)!r}, now {value!r}"
                   for section, values in self.params.items() for key, value in values.items()
                   if other["params"].get(section, {}).get(key) != value]
        if changed:
            return "other params (" + "; ".join(changed[:3]) + (", ..." if len(changed) > 3 else "") + ")"
        for part, words in (("data", "other input data"), ("code", "other training code"), ("device", "another device")):
            if other.get(part) != getattr(self, part):
                return words
        return "another run"


def _still_running(about: dict) -> bool:
    """Whether the run that wrote `about` (a state's JSON), another process of this machine, still trains."""
    pid = about.get("pid")
    return (about.get("host") == socket.gethostname() and isinstance(pid, int) and pid != os.getpid()
            and process_running(str(pid)))


class StateKeeper:
    """The state file of one run's identity: found and checked at the start, rewritten after every
    epoch, removed when the run completes. Rank 0 alone holds one."""

    def __init__(self, identity: Identity, total_epochs: int, log: Callable[[str], None] = print,
                 folder: Path | None = None) -> None:
        self.identity, self.total_epochs, self.log = identity, total_epochs, log
        self.folder = folder if folder is not None else state_folder()
        self.path = self.folder / f"train-{identity.key}.pt" if self.folder else None

    @property
    def about(self) -> Path | None:
        return self.path.with_suffix(".json") if self.path else None

    def load(self, check: Callable[[dict], None] | None = None) -> dict | None:
        """The state to resume from, saying so in one line; None (and why, when there was a state) to
        start afresh. `check` raises ValueError for a state whose layout the loop cannot put back."""
        if self.path is None:
            return None
        if not self.path.exists():
            self._why_not_others()
            return None
        try:
            data = self.path.read_bytes()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    content = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except Exception:  # torch's own words are a page about weights_only: say what it is
                raise ValueError("not a state of this project: truncated, or another program's file") from None
            if not isinstance(content, dict) or content.get("format") != FORMAT:
                raise ValueError(f"not a state of this project (format {FORMAT})")
            if content["identity"] != asdict(self.identity):
                raise ValueError(f"of {self.identity.difference(content['identity'])}")
            epoch, saved = int(content["epoch"]), float(content["saved"])
            step, steps = int(content.get("step", 0)), int(content.get("steps", 0))
            if not 0 <= epoch <= self.total_epochs or not 0 <= step <= steps:
                raise ValueError(f"it claims epoch {epoch} (step {step} of {steps}) of a {self.total_epochs}-epoch run")
            state = content["state"]
            if check is not None:
                check(state)
        except Exception as exc:  # truncated, foreign, another format: never trusted
            reason = " ".join(str(exc).split())[:120] or type(exc).__name__
            self.log(f"train: the saved state {printable(self.path)} cannot be used ({reason}): starting afresh")
            self.remove()
            return None
        self.log(f"train: resuming from {where(epoch, step, steps, self.total_epochs)} (state of "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(saved))}, {printable(self.path)})")
        return state

    def _why_not_others(self) -> None:
        """The newest state of this project that is not this run's: say why it is not used."""
        newest = None
        for about in self.folder.glob("train-*.json") if self.folder.is_dir() else []:
            try:
                other = json.loads(about.read_text())
            except (OSError, ValueError):
                continue
            if other.get("project") != str(project_root()) or _still_running(other):
                continue  # another project's, or an experiment training right now (a queue runs several)
            if newest is None or other["saved"] > newest["saved"]:
                newest = other
        if newest is not None:
            self.log(f"train: the state of an interrupted run (epoch {newest['epoch']} of {newest['total_epochs']}) "
                     f"is of {self.identity.difference(newest['identity'])}: starting afresh")

    def save(self, state: dict, epoch: int, step: int = 0, steps: int = 0) -> None:
        """Replace the state on disk by `state`, the run's after `epoch` (and `step` of the `steps` of the
        next one, within an epoch), at once (a kill leaves the old one).
        A state that cannot be written (a full disk, a read-only folder) costs resuming, not the run: one
        line says so, and this run keeps no more."""
        if self.path is None:
            return
        saved = time.time()
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "identity": asdict(self.identity), "epoch": epoch, "step": step,
                    "steps": steps, "saved": saved, "state": state}, buffer)
        try:
            with atomic_file(self.path) as tmp:
                tmp.write_bytes(buffer.getvalue())
            write_json(self.about, {"identity": asdict(self.identity), "epoch": epoch, "step": step, "steps": steps,
                                    "total_epochs": self.total_epochs, "saved": saved, "project": str(project_root()),
                                    "host": socket.gethostname(), "pid": os.getpid()})
        except (PipelineError, OSError) as exc:
            self.log(f"train: cannot keep the state of {where(epoch, step, steps, self.total_epochs)} ({' '.join(str(exc).split())[:160]}): "
                     f"training goes on, but this run cannot be resumed")
            self.remove()
            self.path = None
            return
        self._keep_newest()

    def _keep_newest(self) -> None:
        def saved_at(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:  # removed meanwhile by another run's clean-up
                return 0.0
        states = sorted(self.folder.glob("train-*.pt"), key=saved_at, reverse=True)
        for old in states[KEPT:]:
            for path in (old, old.with_suffix(".json")):
                path.unlink(missing_ok=True)

    def remove(self) -> None:
        """The run completed (or its state is unusable): no later run resumes it."""
        if self.path is not None:
            for path in (self.path, self.about):
                try:
                    path.unlink(missing_ok=True)
                except OSError:  # its folder is unusable: nothing there to resume either
                    pass

    def kept(self) -> str:
        """Where this run's state on disk stands ('epoch 37 of 200'), '' when there is none (read back:
        the launcher of a data-parallel run holds a keeper too, while its rank 0 writes the state)."""
        try:
            about = json.loads(self.about.read_text())
            if about["identity"] != asdict(self.identity) or not self.path.exists():
                return ""
            return where(int(about["epoch"]), int(about.get("step", 0)), int(about.get("steps", 0)),
                         self.total_epochs)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return ""

    def interrupted(self) -> str:
        """What an interrupted run leaves, for its last line (errors.run_stage prints it)."""
        if self.path is None:  # outside a DVC project nothing is kept
            return DISCARDED
        kept = self.kept()
        if not kept:
            return f"{DISCARDED}; no state had been kept yet, nothing to resume"
        return f"{DISCARDED}; the state of {kept} is kept: `dvc repro` (or the same `dvc exp run`) resumes from it"
