"""What the benchmarks share: the plain alternative they compare with (one epoch of the textbook PyTorch
loop), editing a params.yaml, a scratch copy of the project holding this workspace's data, for
benchmarks that train and evaluate with other settings without touching the workspace's outputs,
running its stages by hand, and a timed `dvc repro` with each stage's seconds."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from ruamel.yaml import YAML
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("stages", "classifier", "tools", "params.yaml", "data/labels.csv", "data/raw", "data/split", "data/prepared",
          "data/augmented", "models/pretrained")


@contextmanager
def scratch_project() -> Iterator[Path]:
    """A temporary folder with the code, params and the data train reads; removed afterwards."""
    if not (ROOT / "data/augmented").is_dir():
        sys.exit("run `dvc repro` first: this benchmark trains on data/augmented")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for name in COPIED:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
        yield work


def plain_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
    """What the PyTorch tutorials write: train mode, then forward, loss, zero_grad, backward, step per batch."""
    model.train()
    for xb, yb in loader:
        loss = nn.functional.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def edit_params(work: Path, changes: dict[str, dict], base: Path | None = None) -> None:
    """`work`/params.yaml with {section: {key: value}} changed (comments kept); read from `base`'s
    params.yaml when given (the project's), else from the file itself."""
    yaml = YAML()
    params = yaml.load(((base or work) / "params.yaml").read_text())
    for section, values in changes.items():
        params[section].update(values)
    with (work / "params.yaml").open("w") as f:
        yaml.dump(params, f)


def set_param(work: Path, section: str, key: str, value) -> None:
    edit_params(work, {section: {key: value}})


def run_tool(work: Path, code: str, environment: dict[str, str] | None = None, one_core: bool = False) -> str:
    """Python `code` run in `work` with its stages importable (on CPU 0 alone: `one_core`); its stdout."""
    env = {**os.environ, **(environment or {}), "PYTHONPATH": str(work)}
    command = [sys.executable, "-c", code]
    result = subprocess.run(["taskset", "-c", "0", *command] if one_core else command, cwd=work, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{code} failed in {work}:\n{result.stderr.strip()}")
    return result.stdout


def run_stages(work: Path, *stages: str, environment: dict[str, str] | None = None, prelude: str = "",
               one_core: bool = False) -> None:
    """`python -m stages.<stage>` for each, in `work` (then train and evaluate pin their CPU kernels)."""
    for stage in stages:
        run_tool(work, f"{prelude}import runpy; runpy.run_module('stages.{stage}', run_name='__main__')",
                 environment, one_core)


def train_and_evaluate(work: Path, environment: dict[str, str] | None = None, prelude: str = "",
                       one_core: bool = False) -> dict:
    """The train and evaluate stages on `work`'s params (`prelude`: Python run before each stage):
    test accuracy and loss, and the first 12 hex digits of the model file's sha256."""
    run_stages(work, "train", "evaluate", environment=environment, prelude=prelude, one_core=one_core)
    summary = json.loads((work / "metrics/summary.json").read_text())
    model = hashlib.sha256((work / "models/model.pt").read_bytes()).hexdigest()[:12]
    return {"test_acc": summary["test_acc"], "loss": summary["loss"], "model": model}


def command_env(**extra: str) -> dict[str, str]:
    """This process's environment with this interpreter's folder first on PATH (the `python` and `dvc` that
    DVC's stages and the benchmarks' commands run are this .venv's), plus `extra`."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra}


def sh(args: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, result.stdout + result.stderr


def timed_repro(work: Path, env: dict, target: str = "") -> tuple[float, dict[str, float], str]:
    """`dvc repro [target]`, its wall time, and each stage's: from its 'Running stage' line to the next."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *([target] if target else [])], cwd=work, env=env,
                               text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marks, lines = [], []
    for line in process.stdout:
        lines.append(line)
        found = re.match(r"Running stage '(\w+)'", line)
        if found:
            marks.append((found[1], time.perf_counter()))
    if process.wait():
        sys.exit("dvc repro failed:\n" + "".join(lines[-40:]))
    end = time.perf_counter()
    stages = {name: (marks[i + 1][1] if i + 1 < len(marks) else end) - at for i, (name, at) in enumerate(marks)}
    return end - start, stages, "".join(lines)


def per_stage(stages: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in stages.items())
