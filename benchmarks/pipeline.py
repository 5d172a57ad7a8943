"""Benchmark: the default pipeline from scratch, as a fresh clone's `make repro` runs it, stage by
stage, against the same stages run by hand one after another (no DVC).

    python -m benchmarks.pipeline [--repeats 2]     # about 2 minutes on 2 cores

Each run is a fresh `git clone` of this repository's last commit (committed work only), with no DVC
cache, so every stage runs: `dvc repro`, each stage's seconds from its 'Running stage' line to the
next (DVC's checks of the next stage's dependencies count to the stage before). Then the plain
alternative in another fresh clone: `python -m stages.<name>` for each stage in dvc.yaml's order.
And each stage's fixed cost: a Python process that imports the stage's module and does nothing
(`python -c 'import stages.<name>'`, best of 3): what every run of the stage pays before it works.
Best of --repeats for each.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import ROOT, command_env, per_stage, sh, timed_repro

STAGES = ("params", "ingest", "split", "prepare", "augment", "train", "audit", "evaluate")


def fresh_clone(scratch: Path, env: dict) -> Path:
    work = scratch / f"clone-{len(list(scratch.iterdir()))}"
    sh(["git", "clone", "-q", str(ROOT), str(work)], scratch, env)
    return work


def by_hand(work: Path, env: dict) -> float:
    start = time.perf_counter()
    for stage in STAGES:
        sh([sys.executable, "-m", f"stages.{stage}"], work, env)
    return time.perf_counter() - start


def import_seconds(stage: str, env: dict) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import stages.{stage}"], cwd=ROOT, env=env, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    env = command_env()
    runs, plain = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            runs.append(timed_repro(fresh_clone(Path(scratch), env), env))
            plain.append(by_hand(fresh_clone(Path(scratch), env), env))
    wall, stages, _ = min(runs, key=lambda run: run[0])
    starts = {stage: import_seconds(stage, env) for stage in STAGES}
    print(f"dvc repro from scratch, best of {args.repeats}: {wall:.1f} s; per stage (s): {per_stage(stages)}")
    print(f"the stages by hand, no DVC, best of {args.repeats}: {min(plain):.1f} s")
    print(f"ratio: dvc repro takes {wall / min(plain):.2f}× the stages' own time "
          f"(DVC around them: {wall - min(plain):.1f} s)")
    print(f"each stage's start-up, importing its module (s): {per_stage(starts)}; "
          f"{sum(starts.values()):.1f} s in all")


if __name__ == "__main__":
    main()
