"""One GPU per running experiment: an exclusive lock per GPU index, shared by every process of the user.

`dvc queue start -j N` runs N experiments at once, each in its own temporary copy of the repo;
without coordination every one of them would pick GPU 0. Each process that trains or evaluates on a
GPU claims one here: it takes an exclusive `flock` on `<lock dir>/gpu<K>.lock`, keeps the file open
for the rest of its life, and the kernel drops the lock when the process exits, however it exits
(kill -9 included), so a crashed run never leaves a GPU marked busy. When every GPU is held, the
claim waits for one to be freed, saying once who holds them.

The lock folder is $IMAGE_PIPELINE_GPU_LOCKS, or one per user in the system's temporary folder.
"""
from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from .errors import PipelineError

LOCK_DIR_VARIABLE = "IMAGE_PIPELINE_GPU_LOCKS"

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


def claim_gpu(device_count: int, wanted: int | None = None, folder: Path | None = None, poll_s: float = 0.5,
              timeout_s: float | None = None, log: Callable[[str], None] = print) -> int:
    """Lock a GPU no other process holds and return its index: `wanted`, or the lowest free one.

    A process keeps what it claimed (claiming again returns the same index). Waits while all the
    candidates are held, up to `timeout_s` (None: for as long as it takes)."""
    if device_count < 1:
        raise PipelineError("no CUDA GPU to claim: set train.device to cpu or auto")
    if wanted is not None and not 0 <= wanted < device_count:
        raise PipelineError(f"The 'train.device' parameter names cuda:{wanted}, but this machine has "
                            f"{device_count} GPU(s): cuda:0..cuda:{device_count - 1}")
    candidates = [wanted] if wanted is not None else list(range(device_count))
    for index in candidates:
        if index in _held:
            return index
    folder = folder or lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"{folder}: cannot create the GPU lock folder ({exc.strerror}); "
                            f"set {LOCK_DIR_VARIABLE} to a writable folder") from None
    started, told = time.monotonic(), False
    while True:
        for index in candidates:
            fd = _try_lock(folder, index)
            if fd is not None:
                _held[index] = fd
                if told:
                    log(f"got GPU {index} after {time.monotonic() - started:.0f}s")
                return index
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            raise PipelineError(f"no free GPU after {timeout_s:g}s: " + _busy(folder, candidates))
        if not told:
            log(f"waiting for a free GPU: {_busy(folder, candidates)} (train.device: cpu trains on the CPU instead)")
            told = True
        time.sleep(poll_s)


def _busy(folder: Path, candidates: list[int]) -> str:
    return "; ".join(f"GPU {i} is held by {holder(folder, i)}" for i in candidates)


def release_all() -> None:
    """Give back every GPU this process holds (exiting does the same)."""
    for index in list(_held):
        os.close(_held.pop(index))
