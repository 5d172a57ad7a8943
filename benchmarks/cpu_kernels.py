"""Benchmark: the same bytes on every CPU, and what it costs (train.cpu_threads).

    python -m benchmarks.cpu_kernels [--repeats 3]     # after `dvc repro` (it trains on data/augmented)

The data stages are bit-exact on any CPU (tests/test_reproducible.py). Train and evaluate are when
`train.cpu_threads` is N >= 1 (portable kernels, N threads: classifier/training/cpu_kernels.py) and are not
with 0 (the fastest kernels this CPU has, all cores). With one CPU type at hand, other CPUs are
simulated by what differs between them: ATen's and MKL's instruction set held to AVX2 (a CPU without
AVX-512), and one core (`taskset`). Each run trains and evaluates the committed params
(`python -m stages.train`, `stages.evaluate`) in a scratch copy of the project holding this
workspace's data: test accuracy, test loss and the model's bytes, compared within each setting.
Then the cost: train's wall time (the stage, process start-up included) with 2 threads portable
against 0 on this CPU, interleaved, best of --repeats.
"""
from __future__ import annotations

import argparse
import shutil
import time

from benchmarks.harness import run_tool, scratch_project, set_param, train_and_evaluate

AVX2_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
CPUS = [("this CPU", {}, False), ("a CPU without AVX-512", AVX2_CPU, False), ("one core", {}, True)]


def run(work, threads: int, environment: dict, one_core: bool) -> dict:
    set_param(work, "train", "cpu_threads", threads)
    start = time.perf_counter()
    result = train_and_evaluate(work, environment, one_core=one_core)
    return {**result, "wall": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpus = CPUS if shutil.which("taskset") else CPUS[:2]
    with scratch_project() as work:
        for threads, setting in ((2, "train.cpu_threads: 2 (portable)"), (0, "train.cpu_threads: 0 (native)")):
            results = {name: run(work, threads, env, one_core) for name, env, one_core in cpus}
            base = results[cpus[0][0]]
            print(setting)
            print(f"  {'simulated CPU':24} {'test acc':>9} {'test loss':>10}  model bytes")
            for name, r in results.items():
                same = f"{r['model']} (same)" if r["model"] == base["model"] else f"{r['model']} (differ)"
                print(f"  {name:24} {r['test_acc']:9.4f} {r['loss']:10.6f}  {same}")
        walls: dict[int, list[float]] = {2: [], 0: []}
        for _ in range(args.repeats):
            for threads in walls:
                set_param(work, "train", "cpu_threads", threads)
                start = time.perf_counter()
                run_tool(work, "import runpy; runpy.run_module('stages.train', run_name='__main__')")
                walls[threads].append(time.perf_counter() - start)
    portable, native = min(walls[2]), min(walls[0])
    print(f"train stage on this CPU, best of {args.repeats}: portable {portable:.1f} s, native {native:.1f} s: "
          f"portable takes {portable / native:.2f}× the time")


if __name__ == "__main__":
    main()
