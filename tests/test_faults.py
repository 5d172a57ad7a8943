"""Faults and concurrency (issue 17): every number belongs to the run that produced it.

- data-parallel workers die with their launcher (kill -9 included) and never write over a later run;
- a stage's outputs are switched in only after all are written; a write failure is one line;
- a missing input names the stage that makes it; SIGTERM and SIGHUP end a stage like Ctrl-C;
- a killed worker, or a missing node, is one line.
Processes run as DVC runs them (`python -m stages.<name>` in a copy of the project); the pure
pieces are tested in-process.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from classifier.runtime import paths
from classifier.runtime.errors import DISCARDED, PipelineError, missing_input, run_stage
from classifier.runtime.outputs import staged_outputs
from tests.helpers import ROOT, copy_project, env, run_stage as run_stage_process

SMALL = {"data": {"digits_size": 8}, "prepare": {"image_size": 8}, "augment": {"blur_kernels": []},
         "train": {"device": "cpu", "batch_size": 32}}


# ------------------------------------------------------------------------------ in process
def test_outputs_switch_together_or_not_at_all(tmp_path) -> None:
    model, metrics, plots = tmp_path / "models/model.pt", tmp_path / "metrics/train.json", tmp_path / "plots/train"
    for path, text in ((model, "old model"), (metrics, "old metrics")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    plots.mkdir(parents=True)
    (plots / "history.csv").write_text("old history")
    with pytest.raises(PipelineError, match=r"^disk full while writing .*model.pt and 2 other output\(s\): free some "
                                            r"space and rerun \(no output was changed\)$"):
        with staged_outputs(files=(model, metrics), dirs=(plots,)) as out:
            out[model].write_text("new model")
            out[metrics].write_text("new metrics")
            raise OSError(errno.ENOSPC, "No space left on device")  # while writing plots/train
    assert (model.read_text(), metrics.read_text(), (plots / "history.csv").read_text()) == (
        "old model", "old metrics", "old history")
    assert not list(tmp_path.rglob(".*.tmp"))
    with staged_outputs(files=(model, metrics), dirs=(plots,)) as out:
        out[model].write_text("new model")
        out[metrics].write_text("new metrics")
        (out[plots] / "history.csv").write_text("new history")
        assert model.read_text() == "old model"  # nothing switches before everything is written
    assert (model.read_text(), metrics.read_text(), (plots / "history.csv").read_text()) == (
        "new model", "new metrics", "new history")
    assert not list(tmp_path.rglob(".*.tmp"))


def test_under_dvc_a_failed_stage_says_its_outputs_were_removed_not_kept(tmp_path, monkeypatch) -> None:
    """`dvc repro` removes a stage's outputs before it runs: the line must not say they are unchanged."""
    model = tmp_path / "models/model.pt"
    monkeypatch.setenv("DVC_STAGE", "train")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    with pytest.raises(PipelineError, match=r"free some space and rerun \(DVC removed this stage's outputs before it "
                                            r"ran: `dvc checkout` brings back the last run's\)$"):
        with staged_outputs(files=(model,)):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_outputs_are_not_switched_in_when_params_yaml_changed_under_the_stage(tmp_path, monkeypatch) -> None:
    """Two `dvc exp run` at once in one folder: DVC writes the refused second run's -S values into
    params.yaml while the first runs; the first must not credit its results to them."""
    from classifier.params.checks import load_sections
    from classifier.params.train import TrainParams
    project = copy_project(tmp_path / "p", SMALL)
    monkeypatch.chdir(project)
    (project / "metrics").mkdir(exist_ok=True)
    (project / "metrics/train.json").write_text("the earlier run's")
    load_sections(TrainParams)
    with pytest.raises(PipelineError, match=r"^params.yaml changed while this stage ran \(another `dvc exp run` or "
                                            r"an edit in this folder\?\): its new outputs were discarded"):
        with staged_outputs(files=(project / "metrics/train.json",)) as out:
            out[project / "metrics/train.json"].write_text("this run's")
            text = (project / "params.yaml").read_text()
            (project / "params.yaml").write_text(text.replace("lr:", "lr: 0.01 #", 1))  # dvc exp run -S train.lr=0.01
    assert (project / "metrics/train.json").read_text() == "the earlier run's"
    assert not list(project.rglob(".*.tmp"))
    load_sections(TrainParams)  # read again: the next run works from the file as it is now
    with staged_outputs(files=(project / "metrics/train.json",)) as out:
        out[project / "metrics/train.json"].write_text("this run's")
    assert (project / "metrics/train.json").read_text() == "this run's"


def test_a_full_disk_names_the_output_on_the_full_volume(tmp_path, monkeypatch) -> None:
    """A write's ENOSPC names no file: the message names the output whose volume has no space left
    (data/ on a volume of its own, say), not the stage's first output."""
    from classifier.runtime import outputs
    model, data = tmp_path / "models/model.pt", tmp_path / "data/augmented"
    model.parent.mkdir()
    data.parent.mkdir()
    real = os.statvfs

    def statvfs(path):
        stats = real(path)
        full = Path(path) == data.parent
        return os.statvfs_result((stats.f_bsize, stats.f_frsize, stats.f_blocks, 0 if full else stats.f_bfree,
                                  0 if full else stats.f_bavail, *stats[5:]))
    monkeypatch.setattr(outputs.os, "statvfs", statvfs)
    with pytest.raises(PipelineError, match=r"^disk full while writing .*data/augmented and 1 other output\(s\)"):
        with staged_outputs(files=(model,), dirs=(data,)):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_a_read_only_folder_fails_before_any_output_is_replaced(tmp_path, monkeypatch) -> None:
    """Root ignores file modes, so the read-only metrics/ folder is what creating a file answers there."""
    model, metrics = tmp_path / "models/model.pt", tmp_path / "metrics/train.json"
    model.parent.mkdir()
    model.write_text("old model")
    real_open = os.open

    def refuse_metrics(path, *args, **kwargs):
        if Path(path).parent.name == "metrics":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", refuse_metrics)
    body_ran = []
    with pytest.raises(PipelineError, match=r"^permission denied while writing .*metrics/train.json \(.*metrics\): "
                                            r"make it writable and rerun"):
        with staged_outputs(files=(model, metrics)) as out:
            body_ran.append(True)
            out[model].write_text("new model")
    assert not body_ran and model.read_text() == "old model" and not list(tmp_path.rglob(".*.tmp"))


@pytest.mark.parametrize("missing, stage", [
    ("data/split/classes.json", "split"), ("data/augmented/train/images.npy", "augment"),
    ("models/model.pt", "train"), ("data/raw/ingest.json", "ingest"), ("data/prepared", "prepare"),
])
def test_a_missing_input_names_the_stage_that_makes_it(tmp_path, monkeypatch, missing, stage) -> None:
    monkeypatch.chdir(tmp_path)
    error = missing_input(FileNotFoundError(errno.ENOENT, "No such file or directory", missing))
    assert str(error) == (f"{missing} not found: it is made by the {stage} stage; run `dvc repro {stage}` "
                          f"(or `make repro`) first")
    absolute = missing_input(FileNotFoundError(errno.ENOENT, "gone", str(tmp_path / missing)))
    assert str(absolute) == str(error)
    assert missing_input(FileNotFoundError(errno.ENOENT, "gone", "elsewhere/file.txt")) is None


@pytest.mark.parametrize("tool, argv", [("tools.lr_find", []), ("stages.train", []), ("stages.augment", []),
                                        ("stages.prepare", []), ("stages.split", [])])
def test_a_stage_run_by_hand_in_a_fresh_clone_says_what_to_run(tmp_path, monkeypatch, capsys, tool, argv) -> None:
    import importlib
    project = copy_project(tmp_path / "p")
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", [tool, *argv])
    module = importlib.import_module(tool)
    with pytest.raises(SystemExit) as exited:
        run_stage(module.main)
    err = capsys.readouterr().err
    assert exited.value.code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("error: data/") and "not found: it is made by the" in err and "run `dvc repro" in err


@pytest.mark.parametrize("signum, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP")])
def test_sigterm_and_sighup_end_a_stage_like_ctrl_c(tmp_path, monkeypatch, capsys, restore_signal_handlers,
                                                    signum, name) -> None:
    monkeypatch.chdir(tmp_path)

    def stage() -> None:
        with staged_outputs(dirs=(paths.AUGMENTED_DIR,)) as out:
            (out[paths.AUGMENTED_DIR] / "images.npy").write_bytes(b"\0" * 1000)
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the signal arrives here
    stage.__module__ = "tests.test_faults"
    with pytest.raises(SystemExit) as exited:
        run_stage(stage)
    assert exited.value.code == 128 + signum
    assert capsys.readouterr().err == f"error: interrupted ({name}); outputs being written were discarded\n"
    assert not list(tmp_path.rglob(".*.tmp")) and not (tmp_path / paths.AUGMENTED_DIR).exists()


@pytest.mark.parametrize("where, hint", [("workspace", True), ("copy", False), ("ray clone", False), ("repro", False)])
def test_a_failed_workspace_experiment_says_how_to_get_the_last_commit_back(tmp_path, monkeypatch, capsys, where,
                                                                          hint, restore_signal_handlers) -> None:
    """Under `dvc exp run` in the workspace DVC has already set the experiment's params and removed the
    stage's outputs: the line says `make restore`. Not in a queued or --temp copy (the workspace is
    untouched), a Ray node's clone, or under `dvc repro`."""
    from classifier.runtime.errors import CLONE_VARIABLE
    from classifier.experiments.cluster_node import CLONE_VARIABLE as NODE_CLONE_VARIABLE
    assert CLONE_VARIABLE == NODE_CLONE_VARIABLE
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmp1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy if where == "copy" else tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv(CLONE_VARIABLE, raising=False)
    if where != "repro":
        monkeypatch.setenv("DVC_EXP_NAME", "lr-bad")
    else:
        monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    if where == "ray clone":
        monkeypatch.setenv(CLONE_VARIABLE, "1")

    def stage() -> None:
        raise PipelineError("The 'train.lr' parameter must be a float > 0")
    with pytest.raises(SystemExit):
        run_stage(stage)
    restore = ("; the workspace holds this experiment's params and lacks this stage's outputs: `make restore` brings "
               "back the last commit's")
    assert capsys.readouterr().err == f"error: The 'train.lr' parameter must be a float > 0{restore if hint else ''}\n"

    def interrupted() -> None:
        raise KeyboardInterrupt
    with pytest.raises(SystemExit):
        run_stage(interrupted)
    assert capsys.readouterr().err == f"error: interrupted (Ctrl-C); {DISCARDED}{restore if hint else ''}\n"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A small project with its data stages run: train is next."""
    project = copy_project(tmp_path_factory.mktemp("faults") / "p", SMALL)
    for stage in ("ingest", "split", "prepare", "augment"):
        run_stage_process(stage, project)
    return project


def workers_of(launcher: int) -> list[int]:
    """The pids of the training processes the launcher `launcher` started (alive or zombie)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"STAGES_LAUNCHER_PID={launcher}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def rank_of(pid: int) -> int:
    """The torchrun rank of training process `pid` (its RANK environment variable)."""
    for entry in (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"):
        if entry.startswith(b"RANK="):
            return int(entry[5:])
    raise AssertionError(f"process {pid} has no RANK")


def start_long_data_parallel_run(project: Path) -> tuple[subprocess.Popen, list[int]]:
    """`python -m stages.train` with 2 processes and many epochs, once both workers are training."""
    from tests.helpers import set_params
    set_params(project, train={"processes": 2, "epochs": 300})
    launcher = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=project, env=env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Generous: two workers import torch and start at a load of 9 on 2 cores too; it waits on the epoch line.
    deadline = time.monotonic() + 300
    while launcher.poll() is None and time.monotonic() < deadline:
        line = launcher.stdout.readline()
        if line.startswith("epoch") or "epoch 1" in line or "epoch   1" in line:
            break
    workers = workers_of(launcher.pid)
    assert len(workers) == 2 and launcher.poll() is None, launcher.stderr.read() if launcher.poll() else workers
    return launcher, workers


def wait_gone(pids: list[int], seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]:
            return True
        time.sleep(0.1)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.slow
def test_workers_of_a_killed_launcher_die_and_never_overwrite_a_later_run(prepared) -> None:
    from tests.helpers import set_params
    launcher, workers = start_long_data_parallel_run(prepared)
    launcher.kill()  # kill -9: no clean-up of its own
    launcher.wait()
    assert wait_gone(workers), "a training process outlived its launcher"
    set_params(prepared, train={"processes": 1, "epochs": 2})
    run_stage_process("train", prepared)  # the later run
    outputs = [prepared / p for p in (paths.MODEL_FILE, paths.TRAIN_METRICS, paths.TIME_METRICS, paths.HISTORY_FILE)]
    written = [p.read_bytes() for p in outputs]
    time.sleep(1)  # the workers were gone before it started; nothing of theirs can write now
    assert [p.read_bytes() for p in outputs] == written
    assert json.loads((prepared / paths.TRAIN_METRICS).read_text())["epochs"] == 2
    assert not workers_of(launcher.pid)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill a worker", "SIGTERM"])  # SIGHUP: the same path (in-process test above)
def test_a_stopped_data_parallel_run_is_one_line(prepared, how) -> None:
    launcher, workers = start_long_data_parallel_run(prepared)
    if how == "kill a worker":  # rank 1: rank 0, the writer, killed mid-write would leave a temporary file
        os.kill(next(pid for pid in workers if rank_of(pid) == 1), signal.SIGKILL)
    else:
        launcher.send_signal(getattr(signal, how))
    _, err = launcher.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    if how == "kill a worker":
        assert launcher.returncode == 1
        assert lines[0].startswith("error: training process rank ") and "was killed by signal 9 (SIGKILL)" in lines[0]
    else:
        assert launcher.returncode == 128 + getattr(signal, how)
        assert lines[0] == f"error: interrupted ({how}); outputs being written were discarded"
    assert wait_gone(workers)
    assert not list(prepared.rglob(".*.tmp"))


@pytest.mark.slow
def test_a_node_that_never_joins_is_one_line_after_the_rendezvous_timeout(prepared) -> None:
    from tests.helpers import set_params
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    set_params(prepared, train={"processes": 1, "nodes": 2, "rendezvous": f"127.0.0.1:{port}", "epochs": 2})
    try:
        result = subprocess.run([sys.executable, "-m", "stages.train"], cwd=prepared, capture_output=True, text=True,
                                env={**env(), "STAGES_RENDEZVOUS_TIMEOUT": "3"}, timeout=120)
    finally:
        set_params(prepared, train={"nodes": 1, "rendezvous": ""})
    assert f"waiting up to 3 s at 127.0.0.1:{port} for the other 1 node(s)" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the other 1 node(s) did not join at 127.0.0.1:{port} (train.rendezvous)")


# ------------------------------------------------------------------------------ live progress
def test_a_killed_runs_temporaries_are_removed_by_the_next_write_and_a_running_ones_are_not(tmp_path) -> None:
    """kill -9 leaves `.<name>.<pid>.*.tmp` (and `..<name>.<pid>.*.tmp` inside a staged one); the next
    write of that output removes them, not those of a process still running."""
    from classifier.runtime.outputs import write_json
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = [tmp_path / f".time.json.{dead.pid}.1a2b3c4d.tmp", tmp_path / f"..time.json.{dead.pid}.5e6f.tmp.9.7a.tmp"]
    alive = tmp_path / f".time.json.{os.getppid()}.1a2b3c4d.tmp"
    for path in (*killed, alive):
        path.write_text("partial")
    write_json(tmp_path / "time.json", {"epoch": 1})
    assert not any(path.exists() for path in killed) and alive.exists()
    assert json.loads((tmp_path / "time.json").read_text()) == {"epoch": 1}


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_stage_that_runs_retires_the_last_scores(tmp_path, monkeypatch) -> None:
    """The scores of the last run no longer describe the data or model once a stage before evaluate runs."""
    from stages import ingest, split
    project = copy_project(tmp_path / "p", SMALL)
    (project / "metrics").mkdir()
    monkeypatch.chdir(project)
    for stage in (ingest, split):
        (project / paths.SUMMARY_METRICS).write_text('{"test_acc": 0.99}')
        stage.main()
        assert not (project / paths.SUMMARY_METRICS).exists()


@pytest.mark.parametrize("ending, code, kept", [("fails", 1, True), ("is stopped", 130, True), ("succeeds", 0, False)])
def test_a_stage_that_fails_puts_the_last_scores_back(tmp_path, monkeypatch, ending, code, kept) -> None:
    """The git-tracked metrics/summary.json is set aside while a data stage runs: back when the stage
    fails or is stopped (its outputs are unchanged), gone when it succeeds; nothing left beside it."""
    from classifier.runtime.outputs import atomic_dir
    from classifier.runtime.stale_summary import retire_summary
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / paths.SUMMARY_METRICS).write_text('{"test_acc": 0.99}')
    (tmp_path / "data/split").mkdir(parents=True)
    (tmp_path / "data/split/train.csv").write_text("path,label\na.png,cat\n")

    def stage() -> None:
        retire_summary()
        assert not (tmp_path / paths.SUMMARY_METRICS).exists()  # while it runs
        if ending == "fails":
            raise PipelineError("a bad image")
        if ending == "is stopped":
            raise KeyboardInterrupt
        with atomic_dir(tmp_path / "data/split") as out:
            (out / "train.csv").write_text("path,label\nb.png,dog\n")
    stage.__module__ = "tests.test_faults"
    with pytest.raises(SystemExit) as exited:
        run_stage(stage)
    assert exited.value.code == code
    assert (tmp_path / paths.SUMMARY_METRICS).exists() == kept
    assert not list(tmp_path.rglob(".*.tmp"))


def test_ctrl_c_while_a_stage_still_imports_is_one_line(tmp_path) -> None:
    """`python -m stages.<name>` spends its first seconds importing torch: a Ctrl-C there is one line
    and exit 130, not a traceback (run here as Python starts a module with -m: argv[0] is "-m")."""
    code = ("import sys; sys.argv[0] = '-m'; import stages; print('imported', flush=True); "
            "import time; time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "imported\n"  # the guard is in place: stages/__init__.py ran
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err == "error: interrupted (Ctrl-C) while starting; nothing was written\n"


class FakeFailure:
    """What torchrun's agent reports of a failed worker (torch's ProcessFailure, the fields we read)."""

    def __init__(self, exitcode: int, kind: str = "", message: str = "") -> None:
        self.exitcode = exitcode
        self.error_file_data = {"message": message, "kind": kind} if kind else {}
        self.message = message

    def signal_name(self) -> str:
        return signal.Signals(-self.exitcode).name


@pytest.mark.parametrize("failures, expected", [
    # rank 1 killed; the agent then stopped rank 0 with SIGTERM (exit 143): the kill is the cause
    ({0: FakeFailure(143), 1: FakeFailure(-9)}, "training process rank 1 was killed by signal 9 (SIGKILL)"),
    ({0: FakeFailure(1, "lost", "lost contact with the other training processes (x)"), 1: FakeFailure(-9)},
     "training process rank 1 was killed by signal 9 (SIGKILL)"),
    ({0: FakeFailure(1, "pipeline", "training loss became nan in epoch 2"), 1: FakeFailure(-9)},
     "training loss became nan in epoch 2"),
    ({0: FakeFailure(143), 1: FakeFailure(1)}, "training process rank 1 failed (exit code 1)"),  # a crash: traceback
    ({0: FakeFailure(-15), 1: FakeFailure(-9)}, "training process rank 1 was killed by signal 9 (SIGKILL)"),
    ({0: FakeFailure(-15)}, "training process rank 0 was killed by signal 15 (SIGTERM)"),  # the only one: named
])
def test_a_failed_data_parallel_run_names_its_cause_not_the_echoes(failures, expected) -> None:
    from types import SimpleNamespace
    from classifier.training.distributed import _first_message
    assert _first_message(SimpleNamespace(failures=failures)).startswith(expected)


@pytest.mark.parametrize("when, body, code, err", [
    ("in torch's exit callbacks, after a failure", "raise PipelineError('bad')", 128 + signal.SIGTERM, "error: bad\n"),
    ("in torch's exit callbacks, after success", "print('done')", 0, ""),
    ("as the stage settles, after success", "print('done'); settle_at_exit(lambda ok: os.kill(os.getpid(), 15))",
     0, "")])
def test_a_signal_while_the_process_exits_is_no_traceback(tmp_path, when, body, code, err) -> None:
    """torchrun's agent stops the other workers with SIGTERM once one died; one that is already on its
    way out (in an error handler, or torch's exit callbacks) must end quietly, not print a traceback;
    and a stage whose main() returned exits 0, not 143 after its success line (issue 41)."""
    late_sigterm = ("import atexit, os, signal\n"
                    "from classifier.runtime.errors import PipelineError, run_stage, settle_at_exit\n"
                    "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))\n"
                    f"def main():\n    {body}\nrun_stage(main)\n")
    result = subprocess.run([sys.executable, "-c", late_sigterm], cwd=ROOT, env=env(), capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (code, err), when


def test_a_second_signal_does_not_cut_the_clean_up_short(tmp_path, monkeypatch, capsys,
                                                          restore_signal_handlers) -> None:
    """The first SIGTERM starts the clean-up; one more (a launcher forwarding it, say) arriving while
    the temporaries are being removed must not stop that halfway."""
    from classifier.runtime import outputs as io
    monkeypatch.chdir(tmp_path)
    real_remove = io._remove

    def remove_signalled(path):
        os.kill(os.getpid(), signal.SIGTERM)  # the second one, in the middle of the clean-up
        real_remove(path)
    monkeypatch.setattr(io, "_remove", remove_signalled)

    def stage() -> None:
        with staged_outputs(dirs=(paths.AUGMENTED_DIR,)) as out:
            (out[paths.AUGMENTED_DIR] / "images.npy").write_bytes(b"\0" * 1000)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    stage.__module__ = "tests.test_faults"
    with pytest.raises(SystemExit) as exited:
        run_stage(stage)
    assert exited.value.code == 143 and not list(tmp_path.rglob(".*.tmp"))


def test_staged_outputs_switch_only_after_the_body_and_put_the_old_folder_aside_first(tmp_path, monkeypatch) -> None:
    """Nothing is renamed while the stage writes; a folder's old content is moved aside before the new
    one takes its place and removed only after, so no instant is without the output."""
    from classifier.runtime import outputs
    monkeypatch.chdir(tmp_path)
    folder, file = Path("data/out"), Path("metrics/out.json")
    folder.mkdir(parents=True)
    (folder / "old.txt").write_text("old")
    file.parent.mkdir()
    file.write_text("old")
    events: list[tuple] = []
    real_replace, real_rmtree = outputs.os.replace, outputs.shutil.rmtree
    monkeypatch.setattr(outputs.os, "replace", lambda src, dst: (events.append(("replace", Path(src).absolute(), Path(dst).absolute())),
                                                                 real_replace(src, dst)))
    monkeypatch.setattr(outputs.shutil, "rmtree", lambda path, **kw: (events.append(("rmtree", Path(path).absolute())),
                                                                      real_rmtree(path, **kw)))
    with staged_outputs(files=(file,), dirs=(folder,)) as out:
        (out[folder] / "new.txt").write_text("new")
        out[file].write_text("new")
        events.append(("body done",))
    assert events[0] == ("body done",), events
    moves = [e for e in events if e[0] == "replace"]
    aside = next(e for e in moves if e[1] == folder.absolute())
    switched = next(e for e in moves if e[2] == folder.absolute())
    removed = next(e for e in events if e[0] == "rmtree")
    assert events.index(aside) < events.index(switched) < events.index(removed) and removed[1] == aside[2]
    assert (folder / "new.txt").read_text() == "new" and file.read_text() == "new" and not (folder / "old.txt").exists()


def test_a_failing_rename_in_the_switch_is_one_line_that_says_to_rerun(tmp_path, monkeypatch) -> None:
    """The renames are one per output: one refused after another went through leaves a mix, and the
    line says so (DVC recorded nothing for the run, so `dvc status` calls the stage changed)."""
    from classifier.runtime import outputs
    monkeypatch.chdir(tmp_path)
    real_replace = outputs.os.replace
    into_place = []

    def replace(src, dst):
        if not str(dst).endswith(".tmp"):
            into_place.append(dst)
            if len(into_place) == 2:
                raise OSError(errno.EACCES, "Permission denied", str(dst))
        real_replace(src, dst)
    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(PipelineError, match=r"^permission denied while writing metrics/data.json and 1 other "
                                            r"output\(s\) .*: make it writable and rerun \(rerun the stage: its "
                                            r"outputs are a mix of two runs\)$"):
        with staged_outputs(files=(Path("metrics/data.json"),), dirs=(Path("data/augmented"),)) as out:
            out[Path("metrics/data.json")].write_text("new")
    assert Path("metrics/data.json").read_text() == "new" and not list(tmp_path.rglob(".*.tmp"))
