"""DVC's queue on a Ray cluster, for tools.cluster and tools.tune --address: the checks before
anything is sent, the session that sends each experiment as a Ray task (classifier/experiments/
cluster_node.py runs it on the node), follows its progress and pulls it back as it lands.
"""
from __future__ import annotations

import argparse
import logging
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifier.experiments.dvc_client import queue_states, run_dvc
from classifier.runtime.errors import PipelineError, Stopped
from classifier.params.checks import PARAMS_FILE, read_yaml
from classifier.experiments import cluster_node
from classifier.experiments.table import experiments_from_json, dvc_experiments, flatten, markdown_table
from classifier.experiments.search import as_override, check_combination, yaml_value

TRANSFER_REFS = "refs/cluster"   # where each experiment's stashed changes travel to the nodes
POLL_SECONDS = 1.0
CONNECT_SECONDS = 10.0   # for the head's port to answer
LOG_INDENT = "    "


# What a run of tools.cluster is asked when an option is not given (tools.tune --address asks the same).
DEFAULTS = {"set_param": [], "name": None, "cpus_per_run": None, "gpus_per_run": None, "git_remote": "origin",
            "dvc_remote": None, "shared_dir": "", "retries": 3}


@dataclass(frozen=True)
class Request:
    """What a run of tools.cluster was asked to do, checked."""
    address: str
    cpus: float | None         # None: each experiment's train.cpu_threads (at least 1)
    gpus: float | None         # None: 1 where the cluster has GPUs, else 0
    git_remote: str
    git_url: str
    dvc_remote: str
    dvc_url: str
    shared_dir: str
    retries: int


@dataclass(frozen=True)
class Experiment:
    """One queued experiment: DVC's queue entry, the params it changes and all its params (flat keys)."""
    name: str
    stash_rev: str
    baseline_rev: str
    changes: dict[str, Any]
    params: dict[str, Any]

    @classmethod
    def given(cls, name: str, changes: dict[str, Any]) -> "Experiment":
        """One not queued yet: this workspace's params with `changes`."""
        return cls(name, "", "", changes, {**flatten(read_yaml(PARAMS_FILE)), **changes})


def git_remote_url(remote: str) -> str:
    found = subprocess.run(["git", "remote", "get-url", remote], capture_output=True, text=True)
    if found.returncode != 0:
        raise PipelineError(f"no git remote '{remote}': every node clones the experiments from it; add the shared "
                            f"repository with `git remote add {remote} URL` (or give --git-remote)")
    return found.stdout.strip()


def dvc_remote(name: str | None) -> tuple[str, str]:
    """(name, url) of the DVC remote the nodes use: it must be in .dvc/config, which the nodes' clones
    have (`dvc config --project --list`: one KEY=VALUE a line)."""
    shared = dict(line.split("=", 1) for line in run_dvc("config", "--project", "--list").splitlines() if "=" in line)
    remotes = {key[len("remote."):-len(".url")]: url for key, url in shared.items()
               if key.startswith("remote.") and key.endswith(".url")}
    name = name or shared.get("core.remote")
    if not name:
        raise PipelineError("no default DVC remote in .dvc/config: the nodes pull the data stages' outputs from it "
                            "and push their results to it; add one with `dvc remote add -d NAME URL` (not --local)")
    if name not in remotes:
        raise PipelineError(f"DVC remote '{name}' is not in .dvc/config (a --local or global remote never reaches "
                            f"the nodes): add it with `dvc remote add {name} URL` and commit .dvc/config")
    return name, remotes[name]


def local_folder(url: str) -> str | None:
    """The path of a remote or source that is a folder of this machine's, else None (s3://, ssh://, ...)."""
    if url.startswith("file://"):
        return url[len("file://"):]
    return None if re.match(r"^[a-z][a-z0-9+.-]*://", url) or re.match(r"^[\w.-]+@[\w.-]+:", url) else url


def check_request(args: argparse.Namespace) -> Request:
    """Every argument and the local set-up, before the cluster is reached."""
    if not args.address:
        raise PipelineError("no Ray cluster given: pass --address HOST:PORT or set RAY_ADDRESS (`ray start --head` "
                            "prints it)")
    if (args.cpus_per_run is not None and args.cpus_per_run <= 0) or (args.gpus_per_run is not None and
                                                                       args.gpus_per_run < 0):
        raise PipelineError("--cpus-per-run must be more than 0 and --gpus-per-run 0 or more")
    if not 0 <= args.retries <= 100:
        raise PipelineError(f"--retries must be 0 to 100. Got {args.retries}")
    if args.name and not args.set_param:
        raise PipelineError("-n names the experiment -S describes: give -S KEY=VALUE too")
    if args.shared_dir and not Path(args.shared_dir).is_absolute():
        raise PipelineError(f"--shared-dir must be an absolute path, the same on every node. Got {args.shared_dir!r}")
    git_url = git_remote_url(args.git_remote)
    name, url = dvc_remote(args.dvc_remote)
    return Request(args.address, args.cpus_per_run, args.gpus_per_run, args.git_remote, git_url, name, url,
                   args.shared_dir, args.retries)


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    """-S KEY=VALUE texts checked as tools.tune checks a combination (the stages' own rules)."""
    combination = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not re.fullmatch(r"\w+\.\w+", key.strip()):
            raise PipelineError(f"-S {text!r}: expected KEY=VALUE, e.g. -S train.lr=0.01")
        combination[key.strip()] = yaml_value(value, f"-S {text!r}") if value.strip() else value
    check_combination(read_yaml(PARAMS_FILE), combination, what="given")
    return combination


def _params(rev: dict) -> dict[str, Any]:
    """A `dvc exp show --json` revision's params.yaml, flat (train.lr: 0.01)."""
    return flatten((((rev.get("data") or {}).get("params") or {}).get(PARAMS_FILE.name) or {}).get("data") or {})


def queued_experiments(only: set[str] | None = None) -> list[Experiment]:
    """DVC's queued experiments (or those named `only`), oldest first, with the params each changes
    against its baseline commit's: from `dvc exp show --json`, where a queued experiment's rev is its
    entry in DVC's stash."""
    found = []
    for row in dvc_experiments():
        baseline = _params(row)
        for experiment in row.get("experiments") or []:
            rev = experiment["revs"][0]
            name = experiment.get("name") or rev.get("name") or ""
            if (experiment.get("executor") or {}).get("state") != "queued" or (only is not None and name not in only):
                continue
            params = _params(rev)
            changes = {key: value for key, value in params.items() if baseline.get(key) != value}
            found.append((rev["data"].get("timestamp") or "", Experiment(name, rev["rev"], row["rev"], changes, params)))
    return [experiment for _, experiment in sorted(found, key=lambda pair: pair[0])]


def queue_one(overrides: dict[str, Any], name: str | None) -> list[Experiment]:
    """`dvc exp run --queue -S ...` for the experiment -S describes; it, as queued (unnamed: the name DVC
    gave it, the one its queue did not list before)."""
    before = set() if name else set(queue_states())
    arguments = [arg for key, value in overrides.items() for arg in ("-S", as_override(key, value))]
    run_dvc("exp", "run", "--queue", *(["-n", name] if name else []), *arguments)
    return queued_experiments({name} if name else set(queue_states()) - before)


def ray_message(data: dict, ignore_prefix: bool = False) -> None:
    """What Ray's raylets tell the driver (a node died, a task runs again): its first line, not its
    twenty lines of state dump; our own line says what it means for the experiment."""
    for line in data.get("lines", [])[:1]:
        tell(f"cluster: ray: {line.strip().splitlines()[0][:200] if line.strip() else ''}")


def check_reachable(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """A HOST:PORT that takes no connection refused at once: Ray itself tries for minutes, printing
    a warning every few seconds. (Other forms, ray://... or auto, are left to Ray.)"""
    import socket
    found = re.fullmatch(r"\[?([\w.:-]+?)\]?:(\d+)", address)
    if not found:
        return
    try:
        socket.create_connection((found.group(1), int(found.group(2))), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__  # refused, no such host, timed out
        raise PipelineError(f"cannot reach the Ray cluster at {address}: {reason} (is `ray start --head` "
                            f"running there, and the port open?)") from None


def connect(address: str):
    """Ray, connected to the cluster at `address` (a one-line error if it cannot be reached)."""
    check_reachable(address)
    import ray
    import ray._private.worker
    from ray import cloudpickle
    # No public hook for the raylets' errors: the listener prints them through this name, looked up at each call
    # (tests/test_cluster.py pins it).
    ray._private.worker.print_to_stdstream = ray_message
    cloudpickle.register_pickle_by_value(cluster_node)  # the nodes need the packages, not this checkout
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PipelineError(f"cannot reach the Ray cluster at {address}: {' '.join(str(exc).split())[:200]}") from None
    return ray


def node_names(ray) -> dict[str, str]:
    """Node id -> its name (`ray start --node-name`, by default its address), alive or not."""
    return {node["NodeID"]: node.get("NodeName") or node["NodeManagerAddress"] for node in ray.nodes()}


def run_cpus(request: Request, experiment: Experiment) -> float:
    """The CPUs an experiment holds on its node: --cpus-per-run, else the threads train is pinned to
    (train.cpu_threads: two runs of 2 threads on 2 cores took 6x as long as one; 0 is Ray's 1 thread)."""
    if request.cpus is not None:
        return request.cpus
    return float(max(1, int(experiment.params["train.cpu_threads"])))


def check_nodes(ray, request: Request, experiments: list[Experiment]) -> float:
    """Every alive node can run the experiments (cluster_node.probe): else one line naming the node and
    what to set up. The GPUs each run holds."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    alive = [node for node in ray.nodes() if node["Alive"]]
    gpus = request.gpus if request.gpus is not None else (1.0 if any(n["Resources"].get("GPU") for n in alive) else 0.0)
    cpus = max(run_cpus(request, e) for e in experiments)
    if not any(n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus for n in alive):
        raise PipelineError(f"no node of the cluster at {request.address} has {cpus:g} CPUs and {gpus:g} GPUs: "
                            f"lower --cpus-per-run (or train.cpu_threads) or --gpus-per-run")
    folders = [(path, f"DVC remote folder '{request.dvc_remote}'") for path in [local_folder(request.dvc_url)] if path]
    sources = {e.params["data.source"] for e in experiments}
    folders += [(source, "data.source folder") for source in sorted(sources) if Path(source).is_absolute()]
    checks = {"git_url": request.git_url, "folders": folders, "shared_dir": request.shared_dir}
    probe = ray.remote(cluster_node.probe)
    answers = ray.get([probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(checks) for node in alive])
    for node, problems in zip(alive, answers):
        if problems:
            name = node.get("NodeName") or node["NodeManagerAddress"]
            raise PipelineError(f"node {name} cannot run the experiments: "
                                f"{problems[0]} (nothing was sent)")
    return gpus


@dataclass
class Flight:
    """The experiments sent, by name, and what is known of each."""
    refs: dict[str, Any] = field(default_factory=dict)         # name -> the Ray task's ObjectRef
    nodes: dict[str, list[str]] = field(default_factory=dict)  # name -> the nodes it started on, in order
    landed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    landing: set[str] = field(default_factory=set)             # ended on the cluster, being pulled here

    def running(self) -> list[str]:
        return [name for name in self.refs if self.nodes.get(name)]

    def waiting(self) -> list[str]:
        return [name for name in self.refs if not self.nodes.get(name)]


def say(name: str, text: str) -> None:
    tell(f"cluster: {name} {text}")


def tell(text: str) -> None:
    """Lines in one write: the landing thread, Ray's and the main one print side by side."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def send(ray, request: Request, experiments: list[Experiment], gpus: float, progress, flight: Flight) -> None:
    """Each experiment's changes pushed to the git remote, and one Ray task per experiment, in `flight`."""
    refspecs = [f"+{e.stash_rev}:{TRANSFER_REFS}/{e.name}" for e in experiments]
    pushed = subprocess.run(["git", "push", "-q", request.git_remote, *refspecs], capture_output=True, text=True)
    if pushed.returncode != 0:
        raise PipelineError(f"git push {request.git_remote} failed: {' '.join(pushed.stderr.split())[:200]}")
    task = ray.remote(cluster_node.run_experiment)
    # The shared folder: train's states (a lost node's run resumes) and tools.tune's study journals.
    env = {"TRAIN_STATE_DIR": f"{request.shared_dir}/train-state", "TUNE_DIR": f"{request.shared_dir}/tune"} \
        if request.shared_dir else {}
    for experiment in experiments:
        job = {"name": experiment.name, "git_url": request.git_url, "git_remote": "origin",
               "baseline": experiment.baseline_rev, "dvc_remote": request.dvc_remote, "env": env}
        flight.refs[experiment.name] = task.options(
            num_cpus=run_cpus(request, experiment), num_gpus=gpus, max_retries=request.retries, retry_exceptions=False,
            name=f"dvc exp {experiment.name}").remote(job, progress)
        changes = " ".join(as_override(k, v) for k, v in experiment.changes.items())
        say(experiment.name, f"sent ({changes or 'no params changed'})")


def report_progress(progress, flight: Flight, names: dict[str, str], ray) -> None:
    """A line for each event the nodes told since the last look."""
    from ray.exceptions import RayError
    try:
        events = ray.get(progress.take.remote())
    except RayError:  # its node is gone (it lives on this one's): the runs' results still come
        return
    for name, event, node_id, detail in events:
        if node_id not in names:
            names.update(node_names(ray))
        node = names.get(node_id, node_id[:8])
        if event == "started":
            before = list(flight.nodes.get(name, []))
            flight.nodes[name] = [*before, node]  # before the line: a Ctrl-C just after it finds it running
            lost = f": the run on {before[-1]} was lost" if before else ""
            say(name, f"started{' again' if before else ''} on {node}{lost}")
        elif event == "epoch":
            scores = ", ".join(f"{key} {value:.4f}" for key, value in detail.items() if key != "epoch")
            say(name, f"epoch {detail['epoch']} on {node}" + (f": {scores}" if scores else ""))


def land(ray, request: Request, flight: Flight, name: str, task, names: dict[str, str]) -> None:
    """An experiment's task ended: pulled into this repository, or its failure told with its log. Run
    by Session's landing thread, so that the other experiments' lines go on meanwhile."""
    try:
        _land(ray, request, flight, name, task, names)
    finally:
        flight.landing.discard(name)


def _land(ray, request: Request, flight: Flight, name: str, task, names: dict[str, str]) -> None:
    try:
        result = ray.get(task)
    except Exception as exc:  # the task itself died: its retries used up, or cancelled
        flight.failed.append(name)
        say(name, f"lost: {str(exc).strip().splitlines()[0][:200]}")
        return
    node = names.get(result["node"], result["node"][:8])
    if result["status"] != "done":
        flight.failed.append(name)
        log = "".join(f"\n{LOG_INDENT}{line}" for line in result["log"].splitlines())
        say(name, f"failed on {node} (exit {result['exit']}), not run again; its log:{log}")
        run_dvc("queue", "remove", name)
        return
    if result.get("resumed"):
        say(name, f"on {node}: {result['resumed']}")
    pulling = time.monotonic()
    run_dvc("exp", "pull", request.git_remote, name, context=f": `dvc exp pull {request.git_remote} {name}` again")
    run_dvc("queue", "remove", name)  # it ran: not again by `dvc queue start` or the next tools.cluster
    flight.landed.append(name)
    phases = dict(result.get("phases", {}), pull=round(time.monotonic() - pulling, 1))
    say(name, f"landed from {node} in {result['seconds'] + phases['pull']:.1f} s "
              f"({', '.join(f'{phase} {seconds:g} s' for phase, seconds in phases.items())})")


class Session:
    """A connection to the cluster, checked: experiments sent as they come, landed as they end.
    tools.cluster sends DVC's queue at once; tools.tune a trial at a time (ClusterQueue)."""

    def __init__(self, request: Request, experiments: list[Experiment]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        self.request, self.ray = request, connect(request.address)
        # What the nodes pull instead of computing it (the data stages' outputs): in the DVC remote first.
        run_dvc("push", "-q", "-r", request.dvc_remote, context=": the nodes pull the data stages' outputs from it")
        self.gpus = check_nodes(self.ray, request, experiments)
        here = NodeAffinitySchedulingStrategy(self.ray.get_runtime_context().get_node_id(), soft=False)
        self.progress = self.ray.remote(cluster_node.Progress).options(  # dies with this node only
            num_cpus=0, scheduling_strategy=here).remote()
        self.flight, self.names, self.sent = Flight(), node_names(self.ray), []
        # One experiment pulled at a time (DVC locks the repository), while the loop goes on telling.
        self.lander, self.landings = ThreadPoolExecutor(max_workers=1, thread_name_prefix="land"), []

    def send(self, experiments: list[Experiment]) -> None:
        send(self.ray, self.request, experiments, self.gpus, self.progress, self.flight)
        self.sent += [e.name for e in experiments]

    def poll(self, timeout: float) -> None:
        """The nodes' news as lines, and an experiment that ended landed (waiting up to `timeout` for one)."""
        if self.flight.refs:
            done, _ = self.ray.wait(list(self.flight.refs.values()), num_returns=1, timeout=timeout)
        else:
            done = []
            time.sleep(timeout if self.flight.landing else 0)
        report_progress(self.progress, self.flight, self.names, self.ray)
        by_ref = {ref: name for name, ref in self.flight.refs.items()}
        for ref in done:
            name = by_ref[ref]
            del self.flight.refs[name]
            self.flight.landing.add(name)
            self.landings.append(self.lander.submit(land, self.ray, self.request, self.flight, name, ref, self.names))
        for landing in [f for f in self.landings if f.done()]:
            self.landings.remove(landing)
            landing.result()  # a pull that failed: its error, here

    def states(self) -> dict[str, str]:
        """Each experiment sent: queued (not started), running, done (landed) or failed, as DVC's queue says."""
        flight = self.flight
        return {**{name: "queued" for name in flight.waiting()}, **{name: "running" for name in flight.running()},
                **{name: "running" for name in list(flight.landing)},
                **{name: "done" for name in list(flight.landed)}, **{name: "failed" for name in list(flight.failed)}}

    def wait(self) -> None:
        """Until every experiment has landed or failed; Ctrl-C cancels those not started, a second one the rest."""
        stopping = cancelling = False
        while self.flight.refs or self.landings:
            try:
                if cancelling:  # here, not in the handler: a second Ctrl-C while it prints is caught too
                    cancelling = False
                    cancel_waiting(self.ray, self.flight)
                self.poll(POLL_SECONDS)
            except KeyboardInterrupt as exc:
                if stopping:
                    raise Stopped(getattr(exc, "signum", signal.SIGINT), self.stop()) from None
                stopping = cancelling = True

    def stop(self) -> str:
        """Every experiment not landed cancelled, its run killed: what stays in DVC's queue."""
        stopped = list(self.flight.refs)
        for ref in self.flight.refs.values():
            self.ray.cancel(ref, force=True)
        self.flight.refs.clear()
        return f"cluster stopped {', '.join(stopped)}: they stay in DVC's queue"

    def close(self) -> None:
        """The landings under way finished, and the git remote's transfer refs of the experiments that
        ended or were cancelled deleted."""
        self.lander.shutdown(wait=True)
        forget_transfer_refs(self.request, [name for name in self.sent if name not in self.flight.refs])


class ClusterQueue:
    """Where tools.tune --address runs its trials: each sent to the cluster once DVC has queued it, and
    pulled back as it ends (the trials report to the study's journal in --shared-dir as they train)."""
    failure_hint = "its log is above"

    def __init__(self, request: Request) -> None:
        self.session = Session(request, [Experiment.given("", {})])

    def send(self, names: list[str]) -> None:
        experiments = queued_experiments(set(names)) if names else []
        if experiments:
            self.session.send(experiments)

    def keep_running(self, jobs: int, queued_now: bool, stalled: bool) -> None:
        self.session.poll(0)

    def states(self) -> dict[str, str]:
        return self.session.states()

    def finish(self) -> None:
        """Every trial sent, landed: train has told the study its end, evaluate and the pull may still run."""
        try:
            self.session.wait()
        finally:
            self.session.close()

    def stop(self) -> str:
        line = self.session.stop()
        self.session.close()
        return line


def cancel_waiting(ray, flight: Flight) -> None:
    waiting, running = flight.waiting(), flight.running()
    for name in waiting:
        ray.cancel(flight.refs.pop(name))
    left = (f"{', '.join(waiting)} not started: cancelled, still in DVC's queue" if waiting
            else "nothing waited to start")
    runs = f"; {', '.join(running)} still run and land as they end (Ctrl-C again stops them)" if running else ""
    tell(f"cluster: Ctrl-C: {left}{runs}")


def forget_transfer_refs(request: Request, names: list[str]) -> None:
    """The refs that carried the experiments' changes, deleted from the git remote (best effort)."""
    if names:
        subprocess.run(["git", "push", "-q", request.git_remote, "--delete", *(f"{TRANSFER_REFS}/{n}" for n in names)],
                       capture_output=True)


def final_table(landed: list[str]) -> str:
    """The landed experiments as tools.report's table."""
    experiments = [e for e in experiments_from_json(dvc_experiments()) if e.name in landed]
    return markdown_table(experiments, "val_acc") if experiments else ""
