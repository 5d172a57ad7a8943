"""Benchmark: four experiments on a Ray cluster of two one-CPU nodes against one node (issue 30).

A copy of the project with the tests' small params (tests/helpers.py CONVERGED: an MLP on digits),
reproduced once, with a bare git remote and a DVC remote folder beside it, as tools.cluster needs.
Then, side by side on the same machine, four experiments (train.lr varied, --epochs epochs,
train.cpu_threads=1) run three ways, each round with its own learning rates so that no round
takes another's results from DVC's run cache:

- local: `dvc exp run -S ...` one after another in the project, no Ray (the plain alternative);
- one node: `python -m tools.cluster` on a Ray cluster of one 1-CPU node (tests/ray_cluster.py);
- two nodes: the same on a cluster of two 1-CPU nodes on 127.0.0.1.

The ratio two nodes / one node is what a second machine buys; (one node - local) / 4 is what Ray
and the clone, pull and push of each experiment cost it. Each node is a `ray start` on this
machine, so the two nodes share its disk and its two cores: on separate machines the second node
adds a whole machine.

    python -m benchmarks.cluster [--epochs 60]     # about 4 minutes on 2 cores

Results in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers import CONVERGED, add_shared_remotes, copy_project, dvc, env, git, init_repo
from tests.ray_cluster import LocalCluster

EXPERIMENTS = 4
PHASES = ("checkout", "run", "push", "pull")


def shared_project(root: Path) -> Path:
    """The reproduced project with a git remote and a DVC remote, both pushed."""
    project = copy_project(root / "project", CONVERGED)
    init_repo(project)
    add_shared_remotes(project, root)
    dvc("push", "-q", cwd=project)
    return project


def experiment_args(round_: int, k: int, epochs: int) -> list[str]:
    return ["-S", f"train.lr=0.0{k}{round_}", "-S", f"train.epochs={epochs}", "-S", "train.cpu_threads=1"]


def local(project: Path, round_: int, epochs: int) -> float:
    started = time.monotonic()
    for k in range(1, EXPERIMENTS + 1):
        dvc("exp", "run", "-q", "-n", f"local-{round_}-{k}", *experiment_args(round_, k, epochs), cwd=project)
    seconds = time.monotonic() - started
    git("reset", "-q", "--hard", cwd=project)  # the committed params and outputs again (exp run leaves its own)
    dvc("checkout", "-q", "--force", cwd=project)
    return seconds


def on_cluster(project: Path, round_: int, epochs: int, nodes: list[str]) -> tuple[float, list[dict[str, float]]]:
    """The wall time of tools.cluster running the round's four queued experiments, and each one's phases."""
    for k in range(1, EXPERIMENTS + 1):
        dvc("exp", "run", "--queue", "-q", "-n", f"ray{len(nodes)}-{round_}-{k}", *experiment_args(round_, k, epochs),
            cwd=project)
    with LocalCluster(nodes) as cluster:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "tools.cluster", "--address", cluster.address], cwd=project,
                              env=env(), capture_output=True, text=True)
        seconds = time.monotonic() - started
    if done.returncode != 0 or f"{EXPERIMENTS} landed, 0 failed" not in done.stdout:
        raise RuntimeError(f"tools.cluster failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    phases = [dict((name, float(value)) for name, value in re.findall(r"(\w+) ([\d.]+) s", match))
              for match in re.findall(r"landed from \S+ in [\d.]+ s \(([^)]*)\)", done.stdout)]
    return seconds, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as folder:
        project = shared_project(Path(folder))
        plain = local(project, 1, args.epochs)
        one, _ = on_cluster(project, 2, args.epochs, ["head"])
        two, phases = on_cluster(project, 3, args.epochs, ["head", "second"])
    print(f"{EXPERIMENTS} experiments of {args.epochs} epochs (train.cpu_threads=1), MLP on digits")
    print(f"  local, one after another (dvc exp run): {plain:6.1f} s")
    print(f"  tools.cluster, one 1-CPU node:          {one:6.1f} s   Ray, clone, pull and push: "
          f"{(one - plain) / EXPERIMENTS:.1f} s an experiment")
    print(f"  tools.cluster, two 1-CPU nodes:         {two:6.1f} s")
    print(f"  ratio: two nodes take {two / one:.2f}x one node's time")
    means = {phase: statistics.mean(p.get(phase, 0.0) for p in phases) for phase in PHASES}
    print("  each experiment on two nodes, mean: " + ", ".join(f"{k} {v:.1f} s" for k, v in means.items()))


if __name__ == "__main__":
    main()
