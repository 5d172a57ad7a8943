"""Benchmark: experiments side by side (`dvc queue start -j 2`) and train.cpu_threads.

    python -m benchmarks.threads [--repeats 2]     # after `dvc repro` (it trains on data/augmented)

DVC's queue runs each experiment in a folder of its own, as separate processes. Here: the train
stage of the committed params (`python -m stages.train`, process start-up included) in two scratch
copies of the project at once, with train.cpu_threads 2 (the default) and 1, against one run alone
with 2 threads. The wall time of the pair, and the model bytes of each thread count: the same
whether a run is alone or beside another; another thread count splits the reductions otherwise, and
gives other bytes (classifier/training/cpu_kernels.py). Interleaved, best of --repeats.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.harness import scratch_project, set_param


def train_at_once(works: list[Path], threads: int) -> tuple[float, set[str]]:
    """Wall seconds until the train stage has ended in every folder of `works`, started together, and
    the sha256 digests (12 hex digits) of the models they wrote."""
    for work in works:
        set_param(work, "train", "cpu_threads", threads)
    start = time.perf_counter()
    runs = [subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=work, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(work)})
            for work in works]
    for work, run in zip(works, runs):
        if run.wait() != 0:
            raise SystemExit(f"stages.train failed in {work}:\n{run.stderr.read().strip()}")
    seconds = time.perf_counter() - start
    return seconds, {hashlib.sha256((work / "models/model.pt").read_bytes()).hexdigest()[:12] for work in works}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    settings = {"one run, 2 threads": (1, 2), "two runs, 2 threads each": (2, 2), "two runs, 1 thread each": (2, 1)}
    walls: dict[str, list[float]] = {name: [] for name in settings}
    models: dict[int, set[str]] = {2: set(), 1: set()}
    with ExitStack() as stack:
        works = [stack.enter_context(scratch_project()) for _ in range(2)]
        for _ in range(args.repeats):
            for name, (runs, threads) in settings.items():
                seconds, digests = train_at_once(works[:runs], threads)
                walls[name].append(seconds)
                models[threads] |= digests
    print(f"train stage of the committed params on {os.cpu_count()} cores, best of {args.repeats}:")
    alone = min(walls["one run, 2 threads"])
    for name, seconds in walls.items():
        print(f"  {name:26} {min(seconds):6.1f} s  ({min(seconds) / alone:.2f}× one run alone)")
    for threads, digests in models.items():
        print(f"  model bytes with {threads} thread(s): {'the same in every run' if len(digests) == 1 else digests}")


if __name__ == "__main__":
    main()
