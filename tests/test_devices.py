"""One GPU per running experiment: real concurrent processes claiming from a fake GPU count."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from classifier.training.devices import LOCK_DIR_VARIABLE, claim_gpu, release_all
from classifier.runtime.errors import PipelineError
from tests.helpers import ROOT

# A claimant: claims a GPU among `count`, prints the index it got, then holds it until killed or stdin closes.
CLAIMANT = """
import sys
from classifier.training.devices import claim_gpus
devices, wanted, count = int(sys.argv[1]), (None if sys.argv[2] == '-' else int(sys.argv[2])), int(sys.argv[3])
got = claim_gpus(devices, count, wanted, poll_s=0.05, log=lambda m: print('LOG', m, flush=True))
print(','.join(map(str, got)), flush=True)
sys.stdin.read()
"""


def start(lock_dir: Path, devices: int, wanted: int | None = None, count: int = 1) -> subprocess.Popen:
    env = dict(os.environ, **{LOCK_DIR_VARIABLE: str(lock_dir)}, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", CLAIMANT, str(devices), "-" if wanted is None else str(wanted),
                             str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def got_all(process: subprocess.Popen) -> list[int]:
    """The GPU indices a claimant got (after waiting, if it had to)."""
    for line in process.stdout:
        if not line.startswith("LOG"):
            return [int(i) for i in line.split(",")]
    raise AssertionError("the claimant exited without a GPU")


def got(process: subprocess.Popen) -> tuple[int, None]:
    """The one GPU index a claimant got."""
    (index,) = got_all(process)
    return index, None


def waiting(process: subprocess.Popen) -> str:
    """The line a claimant prints when it starts waiting."""
    line = process.stdout.readline()
    assert line.startswith("LOG waiting for "), line
    return line


@pytest.fixture
def claimants(tmp_path):
    started: list[subprocess.Popen] = []

    def launch(devices: int, wanted: int | None = None, count: int = 1) -> subprocess.Popen:
        started.append(start(tmp_path, devices, wanted, count))
        return started[-1]
    yield launch
    for process in started:
        process.kill()
        process.wait()


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_concurrent_runs_get_different_gpus_and_the_extra_one_waits(claimants) -> None:
    first, second = claimants(2), claimants(2)
    first_gpu, second_gpu = got(first)[0], got(second)[0]
    assert {first_gpu, second_gpu} == {0, 1}
    third = claimants(2)
    line = waiting(third)
    assert f"pid {first.pid}" in line and f"pid {second.pid}" in line  # it says who holds them
    time.sleep(0.3)
    assert third.poll() is None  # still waiting: never shares a GPU
    second.stdin.close()  # the second run ends normally
    assert got(third)[0] == second_gpu


def test_a_killed_run_frees_its_gpu(claimants) -> None:
    holder = claimants(1)
    assert got(holder)[0] == 0
    waiter = claimants(1)
    waiting(waiter)
    os.kill(holder.pid, signal.SIGKILL)  # no cleanup runs: the kernel drops the lock
    assert got(waiter)[0] == 0


def test_a_pinned_gpu_waits_for_that_gpu_even_when_another_is_free(claimants) -> None:
    holder = claimants(2, wanted=1)
    assert got(holder)[0] == 1
    pinned = claimants(2, wanted=1)
    waiting(pinned)
    free = claimants(2)
    assert got(free)[0] == 0  # an unpinned run takes the free one
    holder.stdin.close()
    assert got(pinned)[0] == 1


def test_a_multi_gpu_run_takes_all_its_gpus_at_once_and_holds_none_while_waiting(claimants) -> None:
    single = claimants(2)
    assert got(single)[0] == 0
    pair = claimants(2, count=2)  # a data-parallel launcher: two processes, two GPUs
    assert "waiting for 2 free GPUs: GPU 0 is held by pid" in waiting(pair)
    other = claimants(2)
    assert got(other)[0] == 1  # the waiting pair holds nothing: no two runs can wait on each other
    single.stdin.close()
    other.stdin.close()
    assert got_all(pair) == [0, 1]


def test_more_processes_than_gpus_is_refused(tmp_path) -> None:
    from classifier.training.devices import claim_gpus
    with pytest.raises(PipelineError, match=r"'train.processes' parameter asks for 3 GPUs \(one per process\), but "
                                            r"this machine has 2"):
        claim_gpus(2, 3, folder=tmp_path)


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_claims_in_one_process_are_kept_and_released(tmp_path) -> None:
    try:
        assert claim_gpu(2, folder=tmp_path) == 0
        assert claim_gpu(2, folder=tmp_path) == 0  # the same process keeps what it has
        message = claim_elsewhere(tmp_path)  # another process, with a time limit, gives up clearly
        assert message.startswith(f"no free GPU after 0.1s: GPU 0 is held by pid {os.getpid()}"), message
    finally:
        release_all()
    assert claim_elsewhere(tmp_path) == "0"  # released: the other process gets it


def claim_elsewhere(lock_dir: Path) -> str:
    """What a second process claiming GPU 0 of 1 with a 0.1 s time limit prints: the index, or its error."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("from classifier.training.devices import claim_gpu; from pathlib import Path\n"
            "try: print(claim_gpu(1, folder=Path(%r), timeout_s=0.1, poll_s=0.02, log=lambda m: None))\n"
            "except Exception as e: print(e)" % str(lock_dir))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_gpu_index_the_machine_lacks_is_refused(tmp_path) -> None:
    with pytest.raises(PipelineError, match=r"'train.device' parameter names cuda:2, but this machine has 2 GPU"):
        claim_gpu(2, wanted=2, folder=tmp_path)
    with pytest.raises(PipelineError, match="no CUDA GPU"):
        claim_gpu(0, folder=tmp_path)
