"""Training whose bytes do not depend on the CPU's instruction set or core count (train.cpu_threads).

PyTorch picks CPU code by the CPU it runs on: ATen's vectorised kernels by instruction set (AVX-512
sums 16 floats at a time, AVX2 8: other rounding), oneDNN's and NNPACK's convolutions by
instruction set, MKL's GEMMs by instruction set and thread count, and ATen's parallel reductions
split the work by the thread count. pin_cpu_kernels fixes each: ATen's portable (default)
capability, MKL's conditional numerical reproducibility in its strict mode, the convolutions of
ATen itself (im2col and MKL's GEMM) instead of oneDNN's and NNPACK's, and a fixed thread count.
How far that is shown: on this project's machine, with other instruction sets and thread counts
forced on it (benchmarks/cpu_kernels.py), train's bytes stay the same, where native kernels gave
other bytes with AVX2 forced or one thread. Other CPU models were simulated that way, not run.
"""
from __future__ import annotations

import os


def pin_for_this_run() -> None:
    """pin_cpu_kernels with params.yaml's train.cpu_threads: called by train and evaluate when they
    run as `python -m`, at the top of the module, before anything has computed with torch. A params
    file that does not read is left to the stage's own check, which names the problem."""
    from classifier.runtime.errors import PipelineError
    from classifier.params.checks import load_sections
    from classifier.params.train import TrainParams
    try:
        train = load_sections(TrainParams).train
    except PipelineError:
        return
    # The training processes share the threads: each gets the same count, whether the processes run on
    # one machine or on several (the same weights either way). A torchrun worker knows the world's size
    # from torchrun: another node's params.yaml may say nodes: 1 (docs/scaling-out.md).
    world = int(os.environ.get("WORLD_SIZE") or train.processes * train.nodes)
    pin_cpu_kernels(max(1, train.cpu_threads // world) if train.cpu_threads else 0)


def pin_cpu_kernels(threads: int) -> None:
    """Before the process's first tensor operation (ATen reads its capability once): portable
    kernels and `threads` threads. threads 0: leave PyTorch's choices (fastest, CPU-dependent)."""
    if not threads:
        return
    os.environ["ATEN_CPU_CAPABILITY"] = "default"
    os.environ["MKL_CBWR"] = "COMPATIBLE,STRICT"
    import torch
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        raise RuntimeError("pin_cpu_kernels ran after a tensor operation: ATen had chosen its kernels already")
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(threads)
