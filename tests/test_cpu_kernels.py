"""train.cpu_threads: training on the CPU gives the same bytes on any x86-64 CPU with AVX2, with the
fast kernels (oneDNN's). Other CPUs are simulated on this one by what differs between them: the
instruction set ATen, oneDNN and MKL choose (AVX2 on a CPU without AVX-512), and the number of cores. A few training steps of a small CNN with batch
norm (convolutions, GEMMs and reductions big enough to run on several threads), each in a fresh
process, since ATen chooses its kernels once per process."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

STEPS = """
import hashlib, sys
from classifier.training.cpu_kernels import pin_cpu_kernels
pin_cpu_kernels(int(sys.argv[1]))
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                      nn.Flatten(), nn.Linear(512, 10))
x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for _ in range(3):
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
import os
print(torch.backends.cpu.get_cpu_capability(), os.environ.get("ATEN_CPU_CAPABILITY", "-"),
      torch.backends.mkldnn.enabled,
      hashlib.sha1(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest())
"""
# A CPU without AVX-512: ATen, oneDNN and MKL would choose their AVX2 code on it
OTHER_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def trained(threads: int, env: dict | None = None, one_core: bool = False) -> tuple[str, str]:
    """(ATen's capability and whether oneDNN is on, a hash of the weights) after the steps, in a fresh process."""
    command = [sys.executable, "-c", STEPS, str(threads)]
    if one_core:
        command = ["taskset", "-c", "0", *command]
    inherited = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS",
                                                                  "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**inherited, **(env or {}), "PYTHONPATH": str(ROOT)})
    capability, variable, onednn, digest = result.stdout.split()
    kernels = f"{capability} (ATEN_CPU_CAPABILITY={variable})" if variable != "-" else capability
    return f"{kernels}, oneDNN {'on' if onednn == 'True' else 'off'}", digest


def test_pinned_kernels_give_the_same_weights_on_a_cpu_without_avx512_and_one_core() -> None:
    kernels, pinned = trained(2)
    assert kernels == "AVX2 (ATEN_CPU_CAPABILITY=avx2), oneDNN on"  # the fast kernels, held to AVX2
    # ATen, oneDNN and MKL held to AVX2 by the CPU, on one core (2 threads there: the same split of the work)
    assert trained(2, OTHER_CPU, one_core=bool(shutil.which("taskset")))[1] == pinned


def test_native_kernels_differ_with_the_cpu_which_is_why_they_are_pinned() -> None:
    kernels, native = trained(0)
    capability = kernels.split(",")[0]
    if capability != "AVX512":
        pytest.skip(f"this CPU's ATen capability is {capability}: AVX2 is no other CPU here")
    assert trained(0, OTHER_CPU)[1] != native


def test_train_first_line_says_which_kernels_ran_on_each_kind_of_cpu() -> None:
    """x86-64 with AVX2 (held to it), x86-64 without (its own), not x86-64 (an ARM Mac, simulated by
    platform.machine: ATen's portable kernels, oneDNN off), and cpu_threads 0."""
    code = ("import platform, sys\n"
            "if sys.argv[1] != '-': platform.machine = lambda: sys.argv[1]\n"
            "from classifier.training.cpu_kernels import pin_cpu_kernels, describe\n"
            "pin_cpu_kernels(int(sys.argv[2]))\n"
            "import torch\n"
            "print(torch.backends.cpu.get_cpu_capability(), torch.backends.mkldnn.enabled, describe(), sep='|')\n")
    inherited = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}

    def line(machine: str, threads: int) -> list[str]:
        result = subprocess.run([sys.executable, "-c", code, machine, str(threads)], cwd=ROOT, capture_output=True,
                                text=True, check=True, env={**inherited, "PYTHONPATH": str(ROOT)})
        return result.stdout.strip().split("|")
    assert line("-", 2) == ["AVX2", "True", "AVX2 kernels, 2 threads: the same bytes on any AVX2 CPU"]
    assert line("arm64", 2) == ["DEFAULT", "False", "portable kernels, 2 threads (arm64: not x86-64, no AVX2 to "
                                                      "hold to)"]
    assert line("-", 0)[2] == "this CPU's fastest kernels: train.cpu_threads 0, other CPUs give other bytes"
