"""Benchmark: how much a CPU training run's numbers move when PyTorch picks other CPU kernels.

    python -m benchmarks.cpu_kernels           # after `dvc repro` (it trains on data/augmented)

The data stages are bit-exact on any CPU (tests/test_reproducible.py); training is not: oneDNN
and the vectorised GEMMs choose code by CPU (AVX-512, AVX2, ...), and a different kernel adds in a
different order. With one CPU type at hand, the stand-ins for "another CPU" are the kernel choices
this machine can switch: oneDNN on or off, and 1 or 2 threads (a GEMM split differently). Each
variant trains and evaluates the committed params (`python -m stages.train`, `stages.evaluate`)
in a scratch copy of the project holding this workspace's data, and the test accuracy, test loss
and model bytes are compared with the plain run's.
"""
from __future__ import annotations

from benchmarks.scratch import scratch_project, train_and_evaluate

# Each variant: (name, environment, Python run before the stage)
VARIANTS = [
    ("default (oneDNN on, 2 threads)", {}, ""),
    ("oneDNN off", {}, "import torch; torch.backends.mkldnn.enabled = False; "),
    ("1 thread", {"OMP_NUM_THREADS": "1"}, "import torch; torch.set_num_threads(1); "),
]


def main() -> None:
    with scratch_project() as work:
        results = {name: train_and_evaluate(work, environment, prelude) for name, environment, prelude in VARIANTS}
    base = results[VARIANTS[0][0]]
    print(f"{'variant':32} {'test acc':>9} {'test loss':>10}  model bytes")
    for name, r in results.items():
        same = "same" if r["model"] == base["model"] else f"differ ({r['model']})"
        print(f"{name:32} {r['test_acc']:9.4f} {r['loss']:10.4f}  {same}")
    accuracies = [r["test_acc"] for r in results.values()]
    losses = [r["loss"] for r in results.values()]
    print(f"spread: test accuracy {max(accuracies) - min(accuracies):.4f}, test loss {max(losses) - min(losses):.4f}")


if __name__ == "__main__":
    main()
