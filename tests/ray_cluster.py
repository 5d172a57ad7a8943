"""A real Ray cluster on this machine, for tests/test_cluster.py and benchmarks/cluster.py: a head and
more nodes on 127.0.0.1, each `ray start --block` in a session of its own, so that a node can be
killed alone (every process it started, as a machine's loss would) and `stop()` leaves nothing.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.helpers import env

START_SECONDS = 90      # for a node to say it started, on a loaded machine
OBJECT_STORE_BYTES = 80_000_000   # Ray's least: the experiments pass nothing big through it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalCluster:
    """`with LocalCluster(["head", "second"]) as cluster:` two one-CPU nodes; cluster.address for --address."""

    def __init__(self, names: list[str], cpus: int = 1) -> None:
        self.names, self.cpus = names, cpus
        # Ray's socket paths must stay short (108 bytes): not under pytest's deep tmp_path.
        self.root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> "LocalCluster":
        try:
            for name in self.names:
                self.start(name)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, name: str) -> None:
        head = not self.nodes
        where = ["--head", "--port", str(self.port), "--include-dashboard", "false",
                 "--temp-dir", str(self.root / "tmp")] if head else ["--address", self.address]
        log = self.root / f"{name}.log"
        with log.open("w") as out:
            work = self.root / "work" / name  # the node's TMPDIR: its clones, gone with the cluster
            work.mkdir(parents=True, exist_ok=True)  # a node started again keeps its folder
            self.nodes[name] = subprocess.Popen(
                [str(Path(sys.executable).parent / "ray"), "start", *where, "--node-name", name,
                 "--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus), "--num-gpus", "0",
                 "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats", "--block"],
                env=dict(env(), RAY_USAGE_STATS_ENABLED="0", TMPDIR=str(work)), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while "Ray runtime started" not in log.read_text():
            if self.nodes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start of node {name} failed:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)

    def processes(self, name: str) -> list[psutil.Process]:
        """The node's `ray start` and everything under it (raylet, workers, the runs they started)."""
        try:
            root = psutil.Process(self.nodes[name].pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self, name: str) -> None:
        """The node lost as a machine is: every one of its processes killed at once."""
        for process in self.processes(name):
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.nodes[name].wait()

    def stop(self) -> None:
        for name in reversed(list(self.nodes)):
            self.kill(name)
        shutil.rmtree(self.root, ignore_errors=True)
