"""Benchmark: the same bytes on every CPU, and what it costs (train.cpu_threads), on three models.

    python -m benchmarks.cpu_kernels [--repeats 3]     # after `dvc repro`; about 15 minutes on 2 cores

The data stages are bit-exact on any CPU (tests/test_reproducible.py). Train and evaluate are on any
x86-64 CPU with AVX2 when `train.cpu_threads` is N >= 1 (ATen, oneDNN and MKL held to AVX2, N
threads: classifier/training/cpu_kernels.py) and are not with 0 (the fastest kernels this CPU has,
all cores). With one CPU type at hand, other CPUs are simulated by what differs between them: the
instruction set ATen, oneDNN and MKL choose held to AVX2 (a CPU without AVX-512), and one core
(`taskset`). Each model trains and evaluates (`python -m stages.train`, `stages.evaluate`) in a
scratch copy of the project holding this workspace's data, on the committed params with its model's
changes: test accuracy, test loss and the model's bytes, compared within each setting. Then the
cost: train's wall time (the stage, process start-up included), pinned against native on this CPU,
interleaved, best of --repeats.
"""
from __future__ import annotations

import argparse
import shutil
import time

from benchmarks.folder import MODEL as FOLDER_CNN
from benchmarks.harness import ROOT, edit_params, run_stages, scratch_project, set_param, train_and_evaluate

AVX2_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
CPUS = [("this CPU", {}, False), ("a CPU without AVX-512", AVX2_CPU, False), ("one core", {}, True)]
MODELS = [  # (name, changes to the committed params)
    ("LeNet-5, digits at 32 px (the default)", {}),
    ("benchmarks.folder's CNN, digits at 32 px", {"model": FOLDER_CNN}),
    ("EfficientNet-Lite0, digits at 64 px, 1 epoch", {"model": {"name": "efficientnet_lite0"},
                                                     "prepare": {"image_size": 64}, "train": {"epochs": 1}}),
]
SETTINGS = ((2, "train.cpu_threads: 2 (pinned to AVX2)"), (0, "train.cpu_threads: 0 (native)"))


def same_bytes(work, cpus) -> None:
    for threads, setting in SETTINGS:
        results = {}
        for name, environment, one_core in cpus:
            set_param(work, "train", "cpu_threads", threads)
            results[name] = train_and_evaluate(work, environment, one_core=one_core)
        base = results[cpus[0][0]]
        print(f"  {setting}")
        print(f"    {'simulated CPU':24} {'test acc':>9} {'test loss':>10}  model bytes")
        for name, r in results.items():
            same = "same" if r["model"] == base["model"] else "differ"
            print(f"    {name:24} {r['test_acc']:9.4f} {r['loss']:10.6f}  {r['model']} ({same})")


def train_walls(work, repeats: int) -> dict[int, float]:
    walls: dict[int, list[float]] = {threads: [] for threads, _ in SETTINGS}
    for _ in range(repeats):
        for threads in walls:
            set_param(work, "train", "cpu_threads", threads)
            start = time.perf_counter()
            run_stages(work, "train")
            walls[threads].append(time.perf_counter() - start)
    return {threads: min(times) for threads, times in walls.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpus = CPUS if shutil.which("taskset") else CPUS[:2]
    costs = []
    with scratch_project() as work:
        for name, changes in MODELS:
            edit_params(work, changes, base=ROOT)
            if "prepare" in changes:
                run_stages(work, "prepare", "augment")
            print(name)
            same_bytes(work, cpus)
            walls = train_walls(work, args.repeats)
            costs.append((name, walls[2], walls[0]))
    print(f"train stage on this CPU, best of {args.repeats}:")
    for name, pinned, native in costs:
        print(f"  {name:46} pinned {pinned:6.1f} s  native {native:6.1f} s  {pinned / native:5.2f}×")


if __name__ == "__main__":
    main()
