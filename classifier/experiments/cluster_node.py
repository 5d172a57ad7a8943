"""What one experiment is on a node of the Ray cluster: a clone, `dvc exp run`, `dvc exp push`.

tools.cluster sends `run_experiment` to the cluster as a Ray task, one per experiment. Ray ships this
module by value (the nodes need the project's packages, not this checkout), so it imports only the
standard library; Ray itself is imported inside the task. Each run:

1. clones the shared git remote into a fresh folder and checks out the experiment's base commit with
   the experiment's changes applied (the commit DVC's queue stashed for it, sent as refs/cluster/NAME);
2. runs `dvc exp run --pull --allow-missing -n NAME`: what the DVC remote holds (the data stages'
   outputs) is pulled, not recomputed, and only the stages the change touches run;
3. pushes the experiment (`dvc exp push`: its git ref and its cached outputs), which tools.cluster
   then pulls into the user's repository.

A run that fails (its params, its code) returns its log: no exception, so Ray does not run it again.
A node that dies takes the task with it, and Ray runs the task again on another node; with a shared
folder ($TRAIN_STATE_DIR) train continues from the last epoch the dead node finished.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOG_LINES = 15          # of a failed command's output, in the result
POLL_SECONDS = 0.5      # how often a run's live epoch is looked at
TIME_METRICS = "metrics/time.json"           # train rewrites it after every epoch (classifier.runtime.paths)
HISTORY_FILE = "plots/train/history.csv"     # the epochs so far, the last row the newest
GPU_LOCKS_VARIABLE = "IMAGE_PIPELINE_GPU_LOCKS"   # classifier/training/devices.py's lock folder
CLONE_VARIABLE = "IMAGE_PIPELINE_CLONE"           # classifier/runtime/errors.py: no `make restore` hint in a clone
RESUME_LINE = "train: resuming from "         # what train says on taking up a kept state (training_state)

# Run as `python -c GUARD command...`: the command in a process group of its own that is killed,
# with everything DVC started in it, when the task's process dies (a force-cancel, the worker killed):
# no stage outlives the run it belongs to.
GUARD = r"""
import ctypes, os, signal, subprocess, sys
parent = os.getppid()
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: our parent's death
os.setpgid(0, 0)
def stop(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
if os.getppid() != parent:
    stop(0, None)
sys.exit(subprocess.call(sys.argv[1:]))
"""


def _environment(extra: dict[str, str]) -> dict[str, str]:
    """The node's environment with this interpreter's bin first (`dvc` and `python` in dvc.yaml are
    the ones Ray runs: the project's environment on that node) and the run's own variables."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", **{CLONE_VARIABLE: "1"}, **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-LOG_LINES:])


def _run(command: list[str], cwd: Path, env: dict[str, str], watch=None) -> tuple[int, str]:
    """`command` in `cwd` under GUARD: its exit status and output; `watch()` every POLL_SECONDS meanwhile."""
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen([sys.executable, "-c", GUARD, *command], cwd=cwd, env=env,
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None:
                time.sleep(POLL_SECONDS)
                if watch:
                    watch()
        finally:
            if process.poll() is None:  # cancelled: the guard kills the group
                process.terminate()
                process.wait()
        output.seek(0)
        return process.returncode, output.read()


def live_epoch(clone: Path, since: float) -> dict | None:
    """The newest epoch train has finished in `clone` since `since` (time.time(); the checkout has the
    base commit's): {'epoch': N, 'val_accuracy': ..., 'val_loss': ...}."""
    try:
        if (clone / TIME_METRICS).stat().st_mtime < since:
            return None
        epoch = json.loads((clone / TIME_METRICS).read_text()).get("epoch")
        lines = (clone / HISTORY_FILE).read_text().strip().splitlines()
    except (OSError, ValueError):
        return None
    if not isinstance(epoch, int) or len(lines) < 2:
        return None
    row = dict(zip(lines[0].split(","), lines[-1].split(",")))
    if row.get("epoch") != str(epoch):  # the two files are rewritten one after the other
        return None
    found = {"epoch": epoch}
    for key in ("val_accuracy", "val_loss"):
        try:
            found[key] = float(row[key])
        except (KeyError, ValueError):
            pass
    return found


def checkout(job: dict, clone: Path, env: dict[str, str]) -> tuple[int, str]:
    """A clone of the git remote at the experiment's base commit, with its changes in the workspace
    (as DVC's queue applies a stashed experiment), and the DVC remote it names as the default."""
    ref = f"refs/cluster/{job['name']}"
    steps = [["git", "clone", "-q", "--no-checkout", job["git_url"], str(clone)],
             ["git", "fetch", "-q", "origin", f"+{ref}:{ref}"],
             ["git", "checkout", "-q", "--detach", job["baseline"]],
             ["sh", "-c", f"git diff --binary {job['baseline']} {ref} -- . ':(exclude).dvc/tmp' "
                          f"| git apply --allow-empty"]]
    if job.get("dvc_remote"):
        steps.append(["dvc", "remote", "default", "--local", job["dvc_remote"]])
    for step in steps:
        status, output = _run(step, clone if step[1] != "clone" else clone.parent, env)
        if status != 0:
            return status, f"{' '.join(step[:4])}: {_tail(output)}"
    return 0, ""


class Progress:
    """What the runs tell as they go, as (name, event, node, detail) tuples, until the driver takes
    them: a Ray actor on the driver's node. The runs call `tell` without waiting for it: a task
    blocked in ray.get gives its CPU back to Ray, which would start another run on the node."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def tell(self, event: tuple) -> None:
        self.events.append(event)

    def take(self) -> list[tuple]:
        events, self.events = self.events, []
        return events


def gpu_locks(gpu_ids: list) -> dict[str, str]:
    """The GPU lock folder of a run that Ray gave these GPUs (classifier/training/devices.py). Ray shows a task
    only its own GPUs (CUDA_VISIBLE_DEVICES), each as cuda:0, ...: two runs on one node, given GPUs
    0 and 1, would both lock gpu0.lock in one folder and take turns. A folder per set of GPUs keeps
    them apart (Ray gives no GPU to two tasks at once)."""
    if not gpu_ids:
        return {}
    folder = Path(tempfile.gettempdir()) / f"image-pipeline-gpus-{os.getuid()}" / f"ray-{'-'.join(map(str, gpu_ids))}"
    return {GPU_LOCKS_VARIABLE: str(folder)}


def resumed_from(output: str) -> str:
    """train's line on taking up a kept state ('train: resuming from epoch 37 of 150 (...)'), or ''."""
    return next((line.strip() for line in output.splitlines() if line.startswith(RESUME_LINE)), "")


def run_experiment(job: dict, progress=None) -> dict:
    """One experiment, from clone to push: {'status': 'done' | 'failed', 'node', 'exit', 'seconds',
    'phases' (seconds of checkout, run, push), 'resumed' (train's line, or ''), 'log'}.
    `progress`: a Progress actor's handle."""
    import ray
    node = ray.get_runtime_context().get_node_id()
    name, started = job["name"], time.monotonic()

    def tell(event: str, detail=None) -> None:
        if progress is not None:
            progress.tell.remote((name, event, node, detail))

    tell("started")
    workspace = Path(tempfile.mkdtemp(prefix=f"dvc-exp-{name}-", dir=job.get("workdir") or None))
    clone = workspace / "repo"
    env = _environment({**job.get("env", {}), **gpu_locks(ray.get_gpu_ids())})
    last = {"epoch": 0, "since": float("inf")}  # since: when the run began (the checkout's files are older)
    phases, resumed = {}, ""

    def watch() -> None:
        epoch = live_epoch(clone, last["since"])
        if epoch and epoch["epoch"] != last["epoch"]:
            last.update(epoch)
            tell("epoch", epoch)

    try:
        status, log = checkout(job, clone, env)
        last["since"] = time.time()
        phases["checkout"] = round(time.monotonic() - started, 1)
        if status == 0:
            status, output = _run(["dvc", "exp", "run", "--pull", "--allow-missing", "-n", name], clone, env, watch)
            log, resumed = _tail(output), resumed_from(output)
            phases["run"] = round(time.monotonic() - started - sum(phases.values()), 1)
        if status == 0:
            status, output = _run(["dvc", "exp", "push", job["git_remote"], name], clone, env)
            log = _tail(output) if status else log
            phases["push"] = round(time.monotonic() - started - sum(phases.values()), 1)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return {"status": "done" if status == 0 else "failed", "node": node, "exit": status,
            "seconds": round(time.monotonic() - started, 1), "phases": phases, "resumed": resumed, "log": log}


def probe(checks: dict) -> list[str]:
    """What this node lacks to run the experiments (run on every node before anything is sent):
    the git remote, a DVC remote that is a local folder, a local data folder, the shared folder, dvc."""
    problems = []
    env = _environment({})
    if shutil.which("dvc", path=env["PATH"]) is None:
        problems.append(f"no dvc beside {sys.executable}: install the project's requirements there "
                        f"(make venv) and start Ray from that environment")
    git = subprocess.run(["git", "ls-remote", "-q", checks["git_url"], "HEAD"], capture_output=True, text=True,
                         env=env, timeout=60)
    if git.returncode != 0:
        problems.append(f"cannot reach the git remote {checks['git_url']}: {' '.join(git.stderr.split())[:160]}")
    for folder, what in checks.get("folders", []):
        if not Path(folder).is_dir():
            problems.append(f"no {what} {folder}")
    shared = checks.get("shared_dir")
    if shared and not os.access(shared, os.W_OK):
        problems.append(f"cannot write the shared folder {shared}")
    return problems
