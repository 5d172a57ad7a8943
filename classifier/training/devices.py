"""Where a model runs, and one GPU per running experiment. Used by train, evaluate, lr_find, predict
and the checkpoint.

select_device resolves train.device to a torch device; claim_device makes a CUDA device one this
process holds alone. `dvc queue start -j N` runs N experiments at once, each in its own temporary
copy of the repo; without coordination every one of them would pick GPU 0. Each process that trains
or evaluates on a GPU claims one here: it takes an exclusive `flock` on `<lock dir>/gpu<K>.lock`,
keeps the file open for the rest of its life, and the kernel drops the lock when the process exits,
however it exits (kill -9 included), so a crashed run never leaves a GPU marked busy. When every GPU
is held, the claim waits for one to be freed, saying once who holds them. A data-parallel run's
launcher claims one GPU per process, all at once, and hands them to its workers.

The lock folder is $IMAGE_PIPELINE_GPU_LOCKS, or one per user in the system's temporary folder. The
locks need no torch (imported by the two device functions alone), so claiming a GPU costs no import.
"""
from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from classifier.runtime.errors import PipelineError

if TYPE_CHECKING:
    import torch

LOCK_DIR_VARIABLE = "IMAGE_PIPELINE_GPU_LOCKS"
# Set by the data-parallel launcher for its workers: the GPUs it claimed (and holds) for them, by local rank.
CLAIMED_VARIABLE = "IMAGE_PIPELINE_CLAIMED_GPUS"

_held: dict[int, int] = {}  # GPU index -> open file descriptor holding its lock, for the process's lifetime


def lock_dir() -> Path:
    configured = os.environ.get(LOCK_DIR_VARIABLE)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"image-pipeline-gpus-{os.getuid()}"


def _try_lock(folder: Path, index: int) -> int | None:
    """The descriptor of gpu<index>.lock locked exclusively by this process, or None if another holds it."""
    fd = os.open(folder / f"gpu{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return None
        raise
    # Who holds it, for the message other claimants print; the lock itself is the flock, not this text.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} in {Path.cwd()}\n".encode(), 0)
    return fd


def holder(folder: Path, index: int) -> str:
    try:
        return (folder / f"gpu{index}.lock").read_text().strip() or "another process"
    except OSError:
        return "another process"


def claim_gpus(device_count: int, count: int = 1, wanted: int | None = None, folder: Path | None = None,
               poll_s: float = 0.5, timeout_s: float | None = None, log: Callable[[str], None] = print) -> list[int]:
    """Lock `count` GPUs no other process holds and return their indices: `wanted` (count 1), or the
    lowest free ones. All or none: while fewer than `count` are free it holds none and waits (up to
    `timeout_s`; None: as long as it takes), so two multi-GPU runs never wait on each other.
    A process keeps what it claimed: claiming again returns the same GPUs."""
    if device_count < 1:
        raise PipelineError("no CUDA GPU to claim: set train.device to cpu or auto")
    if count > device_count:
        raise PipelineError(f"The 'train.processes' parameter asks for {count} GPUs (one per process), but this "
                            f"machine has {device_count}: use at most {device_count}, or train.device: cpu")
    if wanted is not None and not 0 <= wanted < device_count:
        raise PipelineError(f"The 'train.device' parameter names cuda:{wanted}, but this machine has "
                            f"{device_count} GPU(s): cuda:0..cuda:{device_count - 1}")
    candidates = [wanted] if wanted is not None else list(range(device_count))
    kept = [index for index in candidates if index in _held][:count]
    if len(kept) == count:
        return kept
    folder = folder or lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"{folder}: cannot create the GPU lock folder ({exc.strerror}); "
                            f"set {LOCK_DIR_VARIABLE} to a writable folder") from None
    started, told = time.monotonic(), False
    while True:
        got: dict[int, int] = {}
        for index in candidates:
            if len(got) == count:
                break
            fd = _try_lock(folder, index)
            if fd is not None:
                got[index] = fd
        if len(got) == count:
            _held.update(got)
            if told:
                log(f"got GPU {', '.join(map(str, got))} after {time.monotonic() - started:.0f}s")
            return list(got)
        for fd in got.values():  # hold none while waiting
            os.close(fd)
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            raise PipelineError(f"no free GPU after {timeout_s:g}s: " + _busy(folder, candidates))
        if not told:
            log(f"waiting for {count if count > 1 else 'a'} free GPU{'s' if count > 1 else ''}: "
                f"{_busy(folder, candidates)} (train.device: cpu trains on the CPU instead)")
            told = True
        time.sleep(poll_s)


def claim_gpu(device_count: int, wanted: int | None = None, **options) -> int:
    """One GPU: claim_gpus with count 1."""
    return claim_gpus(device_count, 1, wanted, **options)[0]


def _busy(folder: Path, candidates: list[int]) -> str:
    held = [i for i in candidates if not _free(folder, i)]
    return "; ".join(f"GPU {i} is held by {holder(folder, i)}" for i in held) or "GPUs were taken meanwhile"


def _free(folder: Path, index: int) -> bool:
    fd = _try_lock(folder, index) if index not in _held else None
    if fd is None:
        return False
    os.close(fd)
    return True


def release_all() -> None:
    """Give back every GPU this process holds (exiting does the same)."""
    for index in list(_held):
        os.close(_held.pop(index))


def select_device(choice: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' or 'cuda:K' without a GPU is an error naming train.device.
    Which GPU a bare 'cuda' gets is claim_device's choice."""
    import torch
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"The 'train.device' parameter is '{choice}' but no CUDA GPU is available: use auto or cpu")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda" if choice == "auto" else choice)


def claim_device(device: torch.device, log: Callable[[str], None] = print, local_rank: int = 0) -> torch.device:
    """The CPU as is; a CUDA device as a GPU this process holds alone (claim_gpu above): its pinned
    index, or the lowest free one, waiting while every GPU is busy with another experiment. A
    data-parallel worker takes the GPU its launcher claimed for its local rank."""
    import torch
    if device.type != "cuda":
        return device
    claimed = os.environ.get(CLAIMED_VARIABLE)
    if claimed:
        index = int(claimed.split(",")[local_rank])
    else:
        index = claim_gpu(torch.cuda.device_count(), device.index, log=log)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
