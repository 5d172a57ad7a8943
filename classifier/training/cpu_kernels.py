"""Training whose bytes do not depend on which x86-64 CPU runs it, at the fast kernels' speed
(train.cpu_threads).

PyTorch picks CPU code by the CPU it runs on: ATen's vectorised kernels by instruction set (AVX-512
sums 16 floats at a time, AVX2 8: other rounding), oneDNN's convolutions and MKL's GEMMs by
instruction set, and ATen's, oneDNN's and MKL's parallel loops split the work by the thread count.
pin_cpu_kernels holds each to AVX2, which every x86-64 CPU since 2013 has (Intel Haswell, AMD
Excavator and Zen): ATen's AVX2 capability, oneDNN's ISA capped at AVX2 (ONEDNN_MAX_CPU_ISA), MKL
in strict conditional numerical reproducibility on its AVX2 code path, NNPACK off, and a fixed
thread count. The kernels are then the same machine code on every such CPU, and as fast as the
native ones (benchmarks/cpu_kernels.py: LeNet-5, a CNN, EfficientNet-Lite0). ATen's portable
(non-vectorised) kernels with oneDNN off, this module's earlier choice, cost 2 to 4.5x on the same
models and 30x on depthwise convolutions on some CPUs.

How far that is shown: on this project's machine (AVX-512), with one core instead of two
(`taskset`), train's bytes stay the same, where native kernels gave other bytes (tests/test_cpu_kernels.py,
benchmarks/cpu_kernels.py). Other CPU models were not run; a difference left unsimulated is the
cache size, from which oneDNN picks some of its blockings. An x86-64 CPU without AVX2 runs its own
kernels and says so (describe()); a CPU that is not x86-64 (ARM) runs ATen's portable kernels with
oneDNN off, this module's earlier choice, not shown on such a CPU here.
"""
from __future__ import annotations

import os
import platform

PINNED_ISA = "AVX2"
FASTEST = "this CPU's fastest kernels: train.cpu_threads 0, other CPUs give other bytes"
_description = FASTEST   # what pin_cpu_kernels chose, for train's first line (describe())


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
    """Before the process's first tensor operation (ATen and oneDNN read their settings once): AVX2
    kernels and `threads` threads. threads 0: leave PyTorch's choices (fastest, CPU-dependent)."""
    global _description
    if not threads:
        return
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if x86:
        isa = PINNED_ISA
        os.environ.update(ATEN_CPU_CAPABILITY=isa.lower(), ONEDNN_MAX_CPU_ISA=isa, MKL_ENABLE_INSTRUCTIONS=isa,
                          MKL_CBWR=f"{isa},STRICT")
    else:  # no AVX2 to hold to (an ARM Mac, say): ATen's portable kernels, oneDNN off, as before
        os.environ["ATEN_CPU_CAPABILITY"] = "default"
    import torch
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):  # above the cap: chosen already
        raise RuntimeError("pin_cpu_kernels ran after a tensor operation: ATen had chosen its kernels already")
    if not x86:
        torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(threads)
    capability = torch.backends.cpu.get_cpu_capability()
    if not x86:
        _description = f"portable kernels, {threads} threads ({platform.machine()}: not x86-64, no AVX2 to hold to)"
    elif capability != PINNED_ISA:
        _description = (f"this CPU's own {capability} kernels, {threads} threads: it has no {PINNED_ISA}, and "
                        f"CPUs that have it give other bytes")
    else:
        _description = f"{PINNED_ISA} kernels, {threads} threads: the same bytes on any {PINNED_ISA} CPU"


def describe() -> str:
    """How this process computes on the CPU, for train's first line."""
    return _description
