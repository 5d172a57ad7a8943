"""Data-parallel training through PyTorch's own launcher (torchrun's elastic agent) and DDP.

`python -m stages.train` with train.processes × train.nodes > 1 starts torchrun's agent in-process
(the engine behind the `torchrun` command), which starts that many copies of `python -m stages.train`
on this machine; each copy sees RANK/WORLD_SIZE/LOCAL_RANK in its environment and trains its shard
(classifier/training/loop.py). On several machines, this one is node 0 (static rendezvous at
train.rendezvous) and the others run the `torchrun` command docs/scaling-out.md shows.

A worker's one-line error goes to torchrun's error file instead of the terminal, and the launcher
prints the first one once, so N processes failing alike still give one line (TorchrunWorker, which
train hands to run_stage). Workers die with their launcher (Linux's parent-death signal), so none
outlives the run it belongs to.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass

import torch
import torch.distributed as dist

from classifier.runtime.errors import PipelineError, Stopped

LAUNCHER_VARIABLE = "STAGES_LAUNCHER_PID"  # set by the data-parallel launcher for its workers

RENDEZVOUS_TIMEOUT = 300  # seconds the launcher waits for the other nodes before giving up


def is_worker() -> bool:
    """Started by torchrun as one of the data-parallel processes of a launcher."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ


def die_with_launcher() -> None:
    """A torchrun worker: be killed when the launcher dies (kill -9 included), and never start
    after it died. Linux only (prctl); elsewhere a no-op."""
    launcher = os.environ.get(LAUNCHER_VARIABLE)
    if not launcher or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    # The signal comes when the parent (torchrun's agent, in the launcher process) exits.
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(launcher):  # the launcher died before the line above
        os._exit(137)


def launcher_alive() -> bool:
    """False in a worker whose launcher is gone: its outputs would not belong to any run."""
    launcher = os.environ.get(LAUNCHER_VARIABLE)
    return not launcher or os.getppid() == int(launcher)


def lost_contact(exc: Exception) -> bool:
    """An error of torch.distributed's collectives: the other side of a connection went away."""
    text = str(exc)
    return type(exc).__module__.startswith("torch.distributed") or any(
        word in text for word in ("Gloo", "gloo", "NCCL", "Connection closed by peer", "Connection reset by peer"))


def leave_for_launcher(message: str, kind: str = "pipeline") -> bool:
    """In a torchrun worker: write `message` where torchrun's agent reads a worker's failure; else False.
    `kind`: pipeline (the user's error) or lost (an echo of another process's failure)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or "RANK" not in os.environ:
        return False
    with open(path, "w") as f:
        json.dump({"message": message, "timestamp": int(time.time()), "kind": kind}, f)
    return True


class TorchrunWorker:
    """errors.run_stage's worker: how a torchrun worker of train reports and dies (errors.Worker)."""

    def active(self) -> bool:
        return is_worker()

    def start(self) -> None:
        die_with_launcher()

    def report(self, message: str, kind: str) -> bool:
        return leave_for_launcher(message, kind)

    def lost_contact(self, exc: Exception) -> bool:
        return lost_contact(exc)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: (0, 1) when it trains alone."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def from_environment() -> World | None:
    """The World torchrun put this process in, or None when it was not started by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def join(world: World, device: torch.device) -> None:
    """Connect to the other processes: NCCL between GPUs, gloo on the CPU."""
    if not world.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_all(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise sum over every process (in place); the tensor itself when alone."""
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def min_all(value: int, world: World, device: torch.device) -> int:
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def from_leader(values: list[float], world: World, device: torch.device) -> list[float]:
    """Rank 0's `values` on every process (the others pass placeholders of the same length)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.cpu().tolist()


def gather_to_leader(value: object, world: World) -> list[object]:
    """Every process's `value`, in rank order, on rank 0 (the others get [] back); [value] alone."""
    if not world.distributed:
        return [value]
    gathered: list = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered if world.leader else []


def share_from_leader(value: object, world: World) -> object:
    """Rank 0's `value` (any picklable object) on every process; the others pass None."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def fingerprint(*parts: object) -> str:
    """A short digest of what must be identical on every process: params, classes, data shapes and labels."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.tobytes() if hasattr(part, "tobytes") else json.dumps(part, sort_keys=True, default=str).encode()
        digest.update(data)
    return digest.hexdigest()[:16]


def check_same_inputs(world: World, digest: str) -> None:
    """Refuse to train when a process (on another machine, most likely) has other params or data than rank 0."""
    if not world.distributed:
        return
    gathered: list = [None] * world.size
    dist.all_gather_object(gathered, (digest, os.uname().nodename, os.getcwd()))
    differing = [f"rank {rank} ({host}:{cwd})" for rank, (d, host, cwd) in enumerate(gathered) if d != gathered[0][0]]
    if differing:
        raise PipelineError(f"{', '.join(differing)} has other params (model, train) or data than rank 0 "
                            f"({gathered[0][1]}:{gathered[0][2]}): check out the same commit and run "
                            f"`dvc pull` or `dvc repro augment` on every node")


def launch(processes: int, nodes: int, rendezvous: str, module: str) -> None:
    """Run `python -m <module>` as `processes` workers here, as node 0 of `nodes`; returns when all succeed.

    One machine: a private c10d rendezvous on a free local port (as `torchrun --standalone`). Several:
    static rendezvous at `rendezvous`, this machine being node rank 0, so rank 0 (the one that
    writes the outputs) runs where DVC runs."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun's agent logs its bookkeeping at INFO/WARNING; the workers' output is what the user needs.
    # A failed worker's own message is printed once by the caller (run_stage), so its errors are muted too.
    # Each of torch's modules sets its logger's own level, so the parent's level alone would not do.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # Share the cores instead of every process starting one thread per core (torchrun would say 1).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    os.environ[LAUNCHER_VARIABLE] = str(os.getpid())  # workers die with this process (die_with_launcher)
    if nodes > 1:  # run id "none": torchrun's default --rdzv-id, which the other nodes' command leaves out
        timeout = int(os.environ.get("STAGES_RENDEZVOUS_TIMEOUT", RENDEZVOUS_TIMEOUT))
        backend, endpoint, configs, run_id = "static", rendezvous, {"rank": 0, "timeout": timeout}, "none"
        print(f"train: waiting up to {timeout} s at {rendezvous} for the other {nodes - 1} node(s) to start "
              f"torchrun (docs/scaling-out.md: \"Several machines\")", flush=True)
    else:
        backend, endpoint, configs, run_id = "c10d", "localhost:0", {}, uuid.uuid4().hex
    config = LaunchConfig(min_nodes=nodes, max_nodes=nodes, nproc_per_node=processes, run_id=run_id,
                          rdzv_backend=backend, rdzv_endpoint=endpoint, rdzv_configs=configs, max_restarts=0,
                          monitor_interval=0.2, start_method="spawn")
    try:
        elastic_launch(config, sys.executable)("-u", "-m", module)
    except ChildFailedError as exc:
        raise PipelineError(_first_message(exc)) from None
    except SignalException as exc:
        raise Stopped(int(exc.sigval)) from None
    except Exception as exc:  # the static rendezvous gave up waiting, or its port is taken
        text = " ".join(str(exc).split())
        if nodes > 1 and any(word in text.lower() for word in ("timeout", "timed out", "rendezvous", "address")):
            raise PipelineError(f"the other {nodes - 1} node(s) did not join at {rendezvous} "
                                f"(train.rendezvous): start torchrun there as docs/scaling-out.md says, check that "
                                f"the port is free and reachable, and rerun ({text[:120]})") from None
        raise


def _first_message(exc) -> str:
    """The cause of a failed run, once: the lowest rank's own message (a user error); else a process
    killed by a signal, or one that crashed; and only then the others' echoes of it (processes the
    agent stopped with SIGTERM once one had failed, or that lost contact with it)."""
    def kind(failure) -> str:
        data = failure.error_file_data if isinstance(failure.error_file_data, dict) else {}
        return data.get("kind", "") if isinstance(failure.message, str) else ""
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # how the agent stops the others once one failed
    echoes = {128 + s for s in stops} | {-s for s in stops}

    def rank_of_cause(failure) -> int:
        if kind(failure) == "pipeline":
            return 0
        if kind(failure) == "lost" or failure.exitcode in echoes:
            return 3
        return 1 if failure.exitcode < 0 else 2  # killed by a signal (SIGKILL, SIGSEGV...), or crashed
    rank, failure = min(exc.failures.items(), key=lambda item: (rank_of_cause(item[1]), item[0]))
    if kind(failure) == "pipeline":
        return failure.message
    if failure.exitcode < 0:
        return f"training process rank {rank} was killed by signal {-failure.exitcode} ({failure.signal_name()}): " \
               f"see its output above"
    if kind(failure) == "lost":
        return f"training process rank {rank}: {failure.message}"
    return f"training process rank {rank} failed (exit code {failure.exitcode}): see its output above"
