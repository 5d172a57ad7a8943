"""The whole suite's decode cache lives in a folder of its own, never the user's; the longest test
files run first, so that under `make test`'s two workers (pytest-xdist, a file each) none of them
starts last and runs alone."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

# One thread for the torch of the test processes (and what they start, unless params say otherwise):
# `make test` runs two files side by side on two cores, and two processes of two OpenMP threads each
# spin-wait for a busy core: 7x slower training steps, measured (one thread: as fast for these models).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from classifier.data.decode_cache import CACHE_VARIABLE  # noqa: E402
from tests.helpers import CONVERGED, STAGES, copy_project, init_repo, stages_run


@pytest.fixture(scope="session", autouse=True)
def private_decode_cache(tmp_path_factory):
    saved = os.environ.get(CACHE_VARIABLE)
    os.environ[CACHE_VARIABLE] = str(tmp_path_factory.mktemp("decode-cache"))
    yield
    if saved is None:
        os.environ.pop(CACHE_VARIABLE, None)
    else:
        os.environ[CACHE_VARIABLE] = saved


@pytest.fixture(autouse=True)
def restore_signal_handlers():
    """A stage run in process (run_stage) sets this process's signal handlers, a finished one to ignore
    them to its exit: put pytest's back after every test."""
    import signal
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory, worker_id) -> Path:
    """A committed project (CONVERGED params) after its first `dvc repro`, made once for the whole
    run, by whichever of `make test`'s workers needs it first (a lock in the run's shared folder):
    the files that need one copy it (helpers.copy_of) instead of making their own (15 s each)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base  # the run's folder, above each worker's
    template = shared / "trained-template"
    with open(shared / "trained-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (template / ".made").exists():
            assert stages_run(init_repo(copy_project(template, CONVERGED))) == STAGES
            (template / ".made").touch()
    return template


# test_resume.py makes its own project; the others copy trained_template, made by the first that asks.
# pytest-xdist hands the first file to one worker and the second to the other: test_resume second, so
# that the other worker trains its own project while the first makes the template, instead of waiting.
LONGEST_FIRST = ("test_cluster.py", "test_resume.py", "test_tune.py", "test_pipeline.py", "test_sharing.py",
                 "test_staleness.py", "test_faults.py", "test_recipes.py")


def pytest_collection_modifyitems(config, items) -> None:
    """The longest files first (a stable sort: each file's tests keep their order)."""
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)
