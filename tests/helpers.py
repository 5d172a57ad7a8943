"""Shared test helpers: tiny image folders, a copy of the project, running stages and dvc."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from ruamel.yaml import YAML

from benchmarks import PROJECT_FILES

ROOT = Path(__file__).resolve().parents[1]

# Small enough to run every stage in seconds, large enough that every split gets every class.
TINY_PARAMS = {
    "data": {"digits_size": 16},
    "prepare": {"image_size": 16},
    "model": {"name": "mlp", "hidden": [32], "dropout": 0.0},
    # One thread (params.yaml: 2): two test files train side by side on two cores (conftest.py).
    "train": {"epochs": 2, "batch_size": 128, "lr": 0.05, "scheduler": "none", "cpu_threads": 1},
    "evaluate": {"train_sample": 1000},  # of 1,259: the sample is taken and stated
}


# Trained to convergence (still seconds on a CPU), so that runs which differ only in how they were
# computed (one process or several) can be held to the same accuracy: conftest's trained_template.
CONVERGED = {"model": {"hidden": [64]}, "train": {"epochs": 10, "batch_size": 64, "lr": 0.1}}


def env() -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin first, so `python` in dvc.yaml is it."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONPATH"] = ""
    e["DVC_NO_ANALYTICS"] = "1"
    return e


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_stage(name: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m stages.<name>` (a pipeline stage), or `python -m <name>` for a dotted name (tools.export)."""
    return run([sys.executable, "-m", name if "." in name else f"stages.{name}"], cwd, check)


def run_stage_in_process(name: str, cwd: Path) -> None:
    """A stage's main() in this process, in `cwd`: its outputs without a new interpreter's imports (the
    subprocess path, with its lock and signals, is what test_pipeline and test_faults run). Train and
    evaluate keep this process's CPU kernels: they pin them only when run as `python -m`."""
    import importlib

    import pytest
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        importlib.import_module(f"stages.{name}").main()


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def changed_stages(root: Path) -> set[str]:
    """The stages `dvc status` says changed (what `dvc repro` would start with)."""
    import json
    return set(json.loads(dvc("status", "--json", cwd=root).stdout))


STAGES = ["params", "ingest", "split", "prepare", "augment", "train", "audit", "evaluate"]


def most_advanced(rows: list[dict]) -> dict:
    """The row that counts among an experiment's rows in `dvc exp show --csv`: while an experiment
    finishes, DVC can list it twice (the running entry and its result); none yet is 'Queued'."""
    order = {"Success": 3, "Running": 2, "Failed": 1}
    def rank(row: dict) -> tuple[int, int]:
        epoch = row.get("epoch") or ""
        return order.get(row["State"], 0), int(epoch) if epoch.isdigit() else -1
    return max(rows, key=rank) if rows else {"State": "Queued"}


def raw_bytes(project: Path, key: str) -> bytes:
    """The bytes data/raw holds for an image key (data/raw/<class>/<file>), read from its shard."""
    from classifier.data.shards import RawImages
    return RawImages(project / "data/raw").bytes(key)


def raw_image_files(project: Path, prefix: str, count: int, dest: Path) -> list[str]:
    """The first `count` images of data/raw whose key starts with `prefix`, written out as files in
    `dest` (for commands that take image files, like tools.predict)."""
    from classifier.data.shards import RawImages, read_index
    raw = RawImages(project / "data/raw")
    dest.mkdir(parents=True, exist_ok=True)
    keys = [key for key in read_index(project / "data/raw")["key"] if key.startswith(prefix)][:count]
    for key in keys:
        (dest / Path(key).name).write_bytes(raw.bytes(key))
    return [str(dest / Path(key).name) for key in keys]


def stages_run(result: subprocess.CompletedProcess) -> list[str]:
    """The stages DVC actually executed, in order, from its own output."""
    return re.findall(r"Running stage '(\w+)'", result.stdout + result.stderr)


def git(*args: str, cwd: Path) -> None:
    run(["git", *args], cwd)


def stop_queue_workers(root: Path) -> None:
    """`dvc queue stop`, and wait until no worker is left: an idle one would run the next test's queue.
    Watched by the pids DVC records for its workers (.dvc/tmp/exps/celery/*.pid), not by `dvc queue
    status` in a loop: a dvc command costs a second of CPU, taken from the other tests running."""
    dvc("queue", "stop", cwd=root)
    deadline = time.monotonic() + 300
    while alive := [pid for pid in queue_worker_pids(root) if process_alive(pid)]:
        assert time.monotonic() < deadline, f"queue workers {alive} did not stop in 5 minutes"
        time.sleep(0.5)


def queue_worker_pids(root: Path) -> list[int]:
    """The pids DVC keeps for its queue workers (dvc-exp-worker-N.pid): a test's look inside DVC."""
    pids = []
    for file in (root / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.pid"):
        try:
            pids.append(file.read_text().strip())
        except OSError:  # being written or removed
            continue
    return [int(pid) for pid in pids if pid.isdigit()]


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) has stopped
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def init_repo(root: Path) -> subprocess.CompletedProcess:
    """Make the copy in `root` a git + DVC repo, run `dvc repro` and commit everything; the repro's output."""
    git("init", "-q", "-b", "main", cwd=root)  # the branch the docs name
    git("config", "user.email", "test@example.com", cwd=root)
    git("config", "user.name", "test", cwd=root)
    dvc("init", "-q", cwd=root)
    for name in ("config", "plots.html"):  # as a clone has them: the offline plots page
        shutil.copy(ROOT / ".dvc" / name, root / ".dvc" / name)
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots")  # the plot templates dvc.yaml names
    git("add", "-A", cwd=root)
    git("commit", "-qm", "project", cwd=root)
    result = dvc("repro", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "first run", cwd=root)
    return result


def restore_baseline(root: Path) -> None:
    """Back to the last commit: `dvc exp run` applies an experiment's results to the workspace,
    which the next experiment would start from."""
    git("reset", "-q", "--hard", cwd=root)
    dvc("checkout", "-f", "-q", cwd=root)


def set_params(root: Path, **changes) -> None:
    """Edit the project's params.yaml in place: set_params(root, prepare={"image_size": 12})."""
    params = read_params(root / "params.yaml")
    for section, values in changes.items():
        params[section].update(values)
    dump_params(root / "params.yaml", params)


def read_params(path: Path) -> dict:
    return YAML(typ="safe").load(path.read_text())


def write_params(path: Path, overrides: dict) -> None:
    """Write params.yaml as the project's, with `overrides` ({section: {key: value}}) applied."""
    params = read_params(ROOT / "params.yaml")
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    dump_params(path, params)


def dump_params(path: Path, params: dict) -> None:
    yaml = YAML()
    yaml.default_flow_style = False
    with path.open("w") as f:
        yaml.dump(params, f)


def copy_project(dest: Path, overrides: dict | None = None) -> Path:
    """A copy of the project's code and config in `dest`, with tiny params and no data."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pth"))
        elif src.exists():
            shutil.copy(src, dest / name)
    merged = {section: dict(values) for section, values in TINY_PARAMS.items()}
    for section, values in (overrides or {}).items():
        merged.setdefault(section, {}).update(values)
    write_params(dest / "params.yaml", merged)
    return dest


def add_shared_remotes(project: Path, root: Path) -> Path:
    """`project` given what tools.cluster's nodes share: a bare git remote (origin, root/remote.git) and a
    default DVC remote folder (store, root/dvc-store) committed in .dvc/config, and main pushed."""
    git("init", "-q", "--bare", "-b", "main", str(root / "remote.git"), cwd=root)
    git("remote", "add", "origin", str(root / "remote.git"), cwd=project)
    dvc("remote", "add", "-d", "store", str(root / "dvc-store"), cwd=project)
    git("commit", "-qam", "shared remotes", cwd=project)
    git("push", "-q", "origin", "main", cwd=project)
    return project


def copy_of(template: Path, dest: Path) -> Path:
    """A copy of a committed, reproduced project (conftest's trained_template) at `dest`: its git
    history, DVC cache and outputs; not its .dvc/tmp (locks, queue, states: the copy's own)."""
    shutil.copytree(template, dest, symlinks=True, dirs_exist_ok=True,
                    ignore=lambda folder, names: ["tmp"] if Path(folder).name == ".dvc" else [])
    (dest / ".made").unlink()
    return dest


def make_image_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (20, 30),
                      channels: int = 3, suffix: str = ".png", seed: int = 0) -> Path:
    """root/<class>/img_<i><suffix>: random images whose brightness depends on the class."""
    rng = np.random.default_rng(seed)
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            base = 40 + 60 * c
            image = np.clip(rng.normal(base, 20, size=(*size, channels)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / name / f"img_{i:03d}{suffix}"), image)
    return root


@contextmanager
def served(folder: Path):
    """A local HTTP server on 127.0.0.1 for `folder`'s files, as a weights host would serve them (with an
    ETag, the content's md5, which `dvc import-url` records and `dvc update` compares); its base URL."""
    import functools
    import hashlib
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def end_headers(self) -> None:
            path = Path(self.translate_path(self.path))
            if path.is_file():
                self.send_header("ETag", f'"{hashlib.md5(path.read_bytes()).hexdigest()}"')
            super().end_headers()

        def log_message(self, *args) -> None:  # quiet
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def assert_picture(path: Path, min_side: int = 100) -> np.ndarray:
    """`path` is a PNG that decodes to a real drawing: at least `min_side` px each way, not one flat colour."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} does not decode"
    assert min(image.shape[:2]) >= min_side, (path, image.shape)
    assert image.std() > 5, f"{path} is a flat picture"
    return image


def cpu_data(images, labels, val_rows: int | None = 15, **extra):
    """A fit's FitData on the CPU: all of `images` to train, the first `val_rows` (None: all) as val,
    normalised as the tests' grey images are; `extra`: weights, augment."""
    import torch
    from classifier.data.preprocessing import Normalizer
    from classifier.training.device_dataset import DeviceDataset
    from classifier.training.loop import FitData
    cpu = torch.device("cpu")
    return FitData(DeviceDataset(images, labels, cpu), DeviceDataset(images[:val_rows], labels[:val_rows], cpu),
                   Normalizer((0.3,), (0.3,)), **extra)


def quiet():
    """Hooks that print nothing (a fit's lines would fill the test's output)."""
    from classifier.training.loop import Hooks
    return Hooks(log=lambda _: None)
