"""tools.cluster (issue 30): DVC experiments on a Ray cluster. The real thing on one machine: `ray start
--head` and a second `ray start` on 127.0.0.1 (one CPU each), a bare git repository and a DVC remote
folder; plus what is checked before anything is sent, and the node side (classifier/experiments/cluster_node.py)."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from classifier.runtime.errors import PipelineError
from tests.helpers import ROOT, add_shared_remotes, copy_of, dvc, env, git
from tests.ray_cluster import LocalCluster
from classifier.experiments import cluster, cluster_node
from tools import cluster as cluster_tool

# Seconds of training, long enough to lose a node in the middle; one thread (the nodes have one CPU each).
LONG = ["-S", "train.epochs=120", "-S", "train.cpu_threads=1"]
KILL_AT_EPOCH = 3    # a run on the second node that has kept this many epochs' state loses its node


def shared_project(root: Path, template: Path) -> Path:
    """A copy of the trained project with a bare git remote and a DVC remote folder, both pushed."""
    return add_shared_remotes(copy_of(template, root / "user"), root)


def cluster_command(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tools.cluster", *args], cwd=project, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def landed_models(project: Path, names: list[str]) -> dict[str, bool]:
    """Each experiment's model file: whether its bytes are in this repository's DVC cache."""
    found = {}
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=project,
                          capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        ref = next(r for r in refs if r.endswith(f"/{name}"))
        lock = subprocess.run(["git", "show", f"{ref}:dvc.lock"], cwd=project, capture_output=True, text=True,
                              check=True).stdout
        md5 = re.search(r"path: models/model\.pt\n\s+hash: md5\n\s+md5: (\w+)", lock).group(1)
        found[name] = (project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    return found


@pytest.mark.integration
def test_experiments_and_a_study_land_from_two_nodes_survive_a_lost_node_and_a_failure_is_told_once(
        tmp_path, trained_template) -> None:
    """One cluster for both commands. tools.cluster: DVC's queue of two experiments and one whose params
    the params stage refuses (DVC's queue takes any value): reported once with its log, not run again;
    a node lost mid-run (wherever the refused one runs, one of the two trains on the second node). Then
    tools.tune --address: two trials at a time, one on each node, reporting to the shared journal."""
    project = shared_project(tmp_path, trained_template)
    names = [f"ray-{k}" for k in range(1, 3)]
    dvc("exp", "run", "--queue", "-q", "-n", "bad-lr", "-S", "train.lr=1e6", *LONG, cwd=project)
    for k, name in enumerate(names, start=1):
        dvc("exp", "run", "--queue", "-q", "-n", name, "-S", f"train.lr=0.0{k}", *LONG, cwd=project)
    shared = tmp_path / "shared"
    shared.mkdir()
    with LocalCluster(["head", "second"]) as ray_nodes:
        command = cluster_command(project, "--address", ray_nodes.address, "--shared-dir", str(shared))
        lines, killed = [], {}
        killer = threading.Thread(target=kill_mid_training, args=(ray_nodes, "second", shared, killed,
                                                                  command), daemon=True)
        killer.start()
        try:
            for line in command.stdout:
                lines.append(line.rstrip())
            command.wait(timeout=600)
        finally:
            if command.poll() is None:
                command.kill()
            killer.join()
        study = subprocess.run([sys.executable, "-m", "tools.tune", "2", "train.lr=loguniform(0.01,0.1)", "--study",
                                "wide", "--jobs", "2", "--pruner", "none", "--address", ray_nodes.address,
                                "--shared-dir", str(shared)], cwd=project, env=env(), capture_output=True, text=True,
                               timeout=600)
    queue_run_landed(project, command.returncode, lines, killed, names)
    study_landed(project, study, shared)
    assert "No experiment tasks in the queue" in dvc("queue", "status", cwd=project).stdout
    remote_refs = subprocess.run(["git", "ls-remote", str(tmp_path / "remote.git")], capture_output=True,
                                 text=True).stdout   # the transfer refs gone, the 2 + 2 experiments there
    assert "refs/cluster/" not in remote_refs and remote_refs.count("refs/exps/") == 4, remote_refs
    assert not runs_in_clones("dvc-exp-")


def queue_run_landed(project: Path, returncode: int, lines: list[str], killed: dict, names: list[str]) -> None:
    """tools.cluster's run of the queue: the refused experiment told once, the lost node's run resumed
    elsewhere, the others landed with their models."""
    output = "\n".join(lines)
    killed_during = killed.get("name")
    assert returncode == 1 and lines[-1] == "error: bad-lr failed on the cluster: its log is above", output
    assert re.search(r"cluster: bad-lr failed on (head|second) \(exit \d+\), not run again; its log:\n(    .*\n)*"
                     r"    error: The 'train.lr' parameter must be a float > 0 and <= 100. Got 1000000.0", output), output
    assert output.count("cluster: bad-lr started") == 1, output
    assert killed_during, f"no experiment trained on the second node:\n{output}"
    assert re.search(rf"cluster: {killed_during} started again on (head|second): the run on second was lost", output)
    # From the state the second node kept in the shared folder, not from epoch 1.
    resumed = re.search(rf"cluster: {killed_during} on (head|second): train: resuming from epoch (\d+) of 120", output)
    assert resumed and int(resumed.group(2)) >= killed["epoch"] >= KILL_AT_EPOCH, output
    assert "2 landed, 1 failed" in output
    rows = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    experiments = {e["name"]: e for row in rows for e in row.get("experiments") or []}
    for name in names:
        metrics = experiments[name]["revs"][0]["data"]["metrics"]["metrics/summary.json"]["data"]
        assert 0.5 < metrics["test_acc"] <= 1, (name, metrics)
    assert landed_models(project, names) == {name: True for name in names}


def study_landed(project: Path, done: subprocess.CompletedProcess, shared: Path) -> None:
    """tools.tune --address: both trials complete, one on each node, their journal in the shared folder."""
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for name in ("wide-1", "wide-2"):
        assert re.search(rf"tune: {name} \(trial \d\) complete: val_loss [\d.]+ after 10 epochs", output), output
    started = dict(re.findall(r"cluster: (wide-\d) started on (\w+)", output))
    assert sorted(started.values()) == ["head", "second"], output   # two at a time: one on each node
    assert (shared / "tune" / "wide.journal").is_file() and not (project / ".dvc" / "tmp" / "tune").exists()
    assert landed_models(project, ["wide-1", "wide-2"]) == {"wide-1": True, "wide-2": True}


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_study_on_a_cluster_needs_a_shared_folder(tmp_path, monkeypatch) -> None:
    local_project(tmp_path / "p", monkeypatch, config=STORE)
    from tools import tune
    with pytest.raises(PipelineError, match="--address needs --shared-dir: a folder every node mounts"):
        tune.cluster_queue(tune.build_parser().parse_args(["2", "train.lr=uniform(0.01,0.1)", "--address", "h:1"]))


def kill_mid_training(cluster: LocalCluster, node: str, shared: Path, killed: dict, command: subprocess.Popen) -> None:
    """The node killed as soon as a run there has kept KILL_AT_EPOCH epochs' state in the shared folder,
    then started again; killed: the run's experiment name and the epoch it had kept. Read on the node's
    side, not from the command's lines, which come late under load (it prints nothing while it pulls a
    result: waiting for a 'landed from second' line first let the node's next run finish unseen)."""
    clones = re.compile(rf"/work/{node}/dvc-exp-(.+)-[^/-]+/repo$")   # tempfile.mkdtemp's suffix has no '-'
    while command.poll() is None:
        for about in (shared / "train-state").glob("train-*.json"):
            try:
                state = json.loads(about.read_text())
            except (OSError, ValueError):   # being written, or removed as its run completed
                continue
            run = clones.search(state.get("project", ""))
            if run and state.get("epoch", 0) >= KILL_AT_EPOCH:
                cluster.kill(node)
                killed.update(name=run.group(1), epoch=state["epoch"])
                cluster.start(node)   # the machine back: the lost run goes to whichever node is free first
                return
        time.sleep(0.1)


def runs_in_clones(prefix: str) -> list[psutil.Process]:
    """Processes still working in a node's clone (cluster_node makes them as TMPDIR/PREFIX...)."""
    left = []
    for process in psutil.process_iter():
        try:
            if f"/{prefix}" in process.cwd():
                left.append(process)
        except psutil.Error:
            continue
    return left


# What is checked here, before the cluster is reached: each refusal names what to set up.

def local_project(root: Path, monkeypatch, origin: bool = True, config: str = "", local_config: str = "") -> Path:
    """A git repository with a DVC config (no dvc run: only what tools.cluster reads), as the cwd."""
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc" / "config").write_text(config)
    (root / ".dvc" / "config.local").write_text(local_config)
    (root / "params.yaml").write_text("train:\n  cpu_threads: 2\n")
    git("init", "-q", cwd=root)
    if origin:
        git("remote", "add", "origin", str(root.parent / "remote.git"), cwd=root)
    monkeypatch.chdir(root)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return root


STORE = "[core]\n    remote = store\n['remote \"store\"']\n    url = /srv/dvc-store\n"


def refusal(argv: list[str]) -> str:
    with pytest.raises(PipelineError) as caught:
        cluster.check_request(cluster_tool.build_parser().parse_args(argv))
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_request_names_its_remotes_and_the_cluster(tmp_path, monkeypatch) -> None:
    local_project(tmp_path / "p", monkeypatch, config=STORE)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    request = cluster.check_request(cluster_tool.build_parser().parse_args(["--shared-dir", "/mnt/shared"]))
    assert (request.address, request.git_url, request.dvc_remote, request.dvc_url, request.shared_dir) == (
        "10.0.0.1:6379", str(tmp_path / "remote.git"), "store", "/srv/dvc-store", "/mnt/shared")


@pytest.mark.parametrize("argv, origin, config, local_config, expected", [
    ([], True, STORE, "", "no Ray cluster given: pass --address"),
    (["--address", "h:1"], False, STORE, "", "no git remote 'origin'"),
    (["--address", "h:1"], True, "", "", "no default DVC remote in .dvc/config"),
    (["--address", "h:1"], True, "[core]\n    remote = mine\n", "['remote \"mine\"']\n    url = /x\n",
     "DVC remote 'mine' is not in .dvc/config"),
    (["--address", "h:1", "--shared-dir", "shared"], True, STORE, "", "--shared-dir must be an absolute path"),
    (["--address", "h:1", "-n", "exp"], True, STORE, "", "-n names the experiment -S describes"),
    (["--address", "h:1", "--cpus-per-run", "0"], True, STORE, "", "--cpus-per-run must be more than 0"),
    (["--address", "h:1", "--retries", "-1"], True, STORE, "", "--retries must be 0 to 100"),
])
@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_request_that_cannot_work_is_refused_in_one_line(tmp_path, monkeypatch, argv, origin, config, local_config,
                                                           expected) -> None:
    local_project(tmp_path / "p", monkeypatch, origin=origin, config=config, local_config=local_config)
    assert expected in refusal(argv)


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_an_experiment_holds_as_many_cpus_as_train_has_threads(tmp_path, monkeypatch) -> None:
    local_project(tmp_path / "p", monkeypatch, config=STORE)
    default = cluster.check_request(cluster_tool.build_parser().parse_args(["--address", "h:1"]))
    given = cluster.check_request(cluster_tool.build_parser().parse_args(["--address", "h:1", "--cpus-per-run", "3"]))
    baseline = cluster.Experiment.given("a", {})
    one_thread = cluster.Experiment.given("b", {"train.cpu_threads": 1})
    all_cores = cluster.Experiment.given("c", {"train.cpu_threads": 0})
    assert [cluster.run_cpus(default, e) for e in (baseline, one_thread, all_cores)] == [2, 1, 1]
    assert cluster.run_cpus(given, baseline) == 3


@pytest.mark.parametrize("url, folder", [("/srv/store", "/srv/store"), ("file:///srv/store", "/srv/store"),
                                         ("../store", "../store"), ("s3://bucket/store", None),
                                         ("ssh://host/store", None), ("git@host:repo.git", None)])
def test_local_folder_is_a_path_of_this_machine(url, folder) -> None:
    assert cluster.local_folder(url) == folder


def test_a_node_lacking_the_remotes_or_folders_says_what(tmp_path) -> None:
    git("init", "-q", "--bare", str(tmp_path / "remote.git"), cwd=tmp_path)
    fine = {"git_url": str(tmp_path / "remote.git"), "folders": [(str(tmp_path), "data.source folder")],
            "shared_dir": str(tmp_path)}
    assert cluster_node.probe(fine) == []
    lacking = {"git_url": str(tmp_path / "nowhere.git"), "folders": [(str(tmp_path / "store"), "DVC remote folder 'store'")]}
    problems = cluster_node.probe(lacking)
    assert len(problems) == 2 and problems[0].startswith(f"cannot reach the git remote {tmp_path / 'nowhere.git'}")
    assert problems[1] == f"no DVC remote folder 'store' {tmp_path / 'store'}"


def test_a_cluster_nobody_listens_at_is_refused_at_once() -> None:
    from tests.ray_cluster import free_port
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(PipelineError, match=rf"^cannot reach the Ray cluster at {address}: Connection refused \(is"):
        cluster.connect(address)
    assert time.monotonic() - started < 5
    with pytest.raises(PipelineError, match="cannot reach the Ray cluster at no-such-host.invalid:6379"):
        cluster.check_reachable("no-such-host.invalid:6379")


def test_a_given_value_that_is_no_yaml_is_refused_naming_it() -> None:
    with pytest.raises(PipelineError, match=r"^-S 'train.lr=\[1': '\[1' is not a YAML value$"):
        cluster.parse_overrides(["train.lr=[1"])


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_the_one_private_ray_name_tools_cluster_replaces_is_still_read_by_name() -> None:
    """Why a private call stays: Ray has no public hook for the errors its raylets push to the driver
    (a node died: twenty lines of state dump each), which its error listener prints through the
    module-level `ray._private.worker.print_to_stdstream`, looked up by name at each call. connect()
    replaces that name with ray_message; a Ray release that renames it or binds it early fails here."""
    import inspect
    import ray._private.worker as worker
    assert callable(worker.print_to_stdstream)
    listener = inspect.getsource(worker.listen_error_messages)
    assert "print_to_stdstream(" in listener and "functools.partial(print_to_stdstream" not in listener


def test_ray_messages_are_cut_to_their_first_line(capsys) -> None:
    cluster.ray_message({"lines": ["The node with node id: abc has been marked dead\nstate dump\nmore", "next"]})
    assert capsys.readouterr().out == "cluster: ray: The node with node id: abc has been marked dead\n"


# The node side.

def write_epochs(clone: Path, epoch_in_time: int, history_epochs: int) -> None:
    (clone / "metrics").mkdir(parents=True, exist_ok=True)
    (clone / "plots" / "train").mkdir(parents=True, exist_ok=True)
    (clone / "plots" / "train" / "history.csv").write_text("epoch,train_loss,val_loss,val_accuracy\n" + "".join(
        f"{e},0.5,0.{e},0.9{e}\n" for e in range(1, history_epochs + 1)))
    (clone / "metrics" / "time.json").write_text(json.dumps({"epoch": epoch_in_time, "seconds": 1.0}))


def test_live_epoch_reads_the_newest_epoch_of_this_run_only(tmp_path) -> None:
    write_epochs(tmp_path, 3, 3)
    assert cluster_node.live_epoch(tmp_path, 0) == {"epoch": 3, "val_accuracy": 0.93, "val_loss": 0.3}
    assert cluster_node.live_epoch(tmp_path, time.time() + 60) is None   # the checkout's files, older than the run
    write_epochs(tmp_path, 4, 3)                                          # caught between the two rewrites
    assert cluster_node.live_epoch(tmp_path, 0) is None
    assert cluster_node.live_epoch(tmp_path / "missing", 0) is None


def test_resumed_from_is_trains_resume_line() -> None:
    output = "Running stage 'train':\ntrain: resuming from epoch 7 of 200 (state of ...)\ntrain: saved epoch 200\n"
    assert cluster_node.resumed_from(output) == "train: resuming from epoch 7 of 200 (state of ...)"
    assert cluster_node.resumed_from("train: saved epoch 200\n") == ""


def test_runs_given_other_gpus_by_ray_lock_them_apart() -> None:
    """Ray shows each run its own GPU as cuda:0: without their own lock folders, two runs on one node
    would wait on one gpu0.lock."""
    from classifier.training import devices
    assert cluster_node.GPU_LOCKS_VARIABLE == devices.LOCK_DIR_VARIABLE
    first, second = cluster_node.gpu_locks(["0"]), cluster_node.gpu_locks(["1"])
    assert first[devices.LOCK_DIR_VARIABLE] != second[devices.LOCK_DIR_VARIABLE]
    assert cluster_node.gpu_locks(["0", "1"]) != first and cluster_node.gpu_locks([]) == {}


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_run_dies_with_the_task_that_started_it(tmp_path) -> None:
    """The task's process killed (-9, as a force-cancel does): the guard kills the command's whole group."""
    pid_file = tmp_path / "pid"
    task = subprocess.Popen([sys.executable, "-c", (
        "import os, sys; from pathlib import Path; from classifier.experiments.cluster_node import _run\n"
        f"_run(['sh', '-c', 'sleep 120 & echo $! > {pid_file}; wait'], Path('.'), dict(os.environ))")], cwd=ROOT, env=env())
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text().strip():
        assert task.poll() is None and time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    sleeper = psutil.Process(int(pid_file.read_text()))
    task.kill()
    task.wait()
    deadline = time.monotonic() + 30
    while alive(sleeper):
        assert time.monotonic() < deadline, "the run outlived the task that started it"
        time.sleep(0.05)


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.integration
def test_ctrl_c_cancels_what_waits_and_a_second_one_stops_what_runs(tmp_path, trained_template) -> None:
    project = shared_project(tmp_path, trained_template)
    for name in ("first", "second"):
        dvc("exp", "run", "--queue", "-q", "-n", name, *LONG, cwd=project)
    with LocalCluster(["head"]) as ray_nodes:   # one CPU: the second experiment waits for the first
        command = cluster_command(project, "--address", ray_nodes.address)
        lines, running = [], []
        try:
            for line in command.stdout:
                lines.append(line.rstrip())
                started = re.match(r"cluster: (first|second) started on head", line)
                if started and not running:   # DVC's queue gives either one first
                    running.append(started.group(1))
                    command.send_signal(signal.SIGINT)
                elif line.startswith("cluster: Ctrl-C"):
                    command.send_signal(signal.SIGINT)
            command.wait(timeout=120)
        finally:
            if command.poll() is None:
                command.kill()
        output = "\n".join(lines)
        assert running, output
        (run,) = running
        waiting = "second" if run == "first" else "first"
        assert (f"cluster: Ctrl-C: {waiting} not started: cancelled, still in DVC's queue; {run} still run and land "
                "as they end (Ctrl-C again stops them)") in output, output
        assert command.returncode == 130 and f"cluster stopped {run}: they stay in DVC's queue" in output, output
        deadline = time.monotonic() + 60
        while runs_in_clones(f"dvc-exp-{run}-"):   # the node's worker is killed; the guard takes its run along
            assert time.monotonic() < deadline, "the stopped run outlived its task"
            time.sleep(0.2)
    queued = dvc("queue", "status", cwd=project).stdout
    assert re.search(r"\bfirst\b.*Queued", queued) and re.search(r"\bsecond\b.*Queued", queued), queued
    remote_refs = subprocess.run(["git", "ls-remote", str(tmp_path / "remote.git")], capture_output=True,
                                 text=True).stdout
    assert "refs/cluster/" not in remote_refs and "refs/exps/" not in remote_refs
