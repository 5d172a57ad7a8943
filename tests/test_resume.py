"""Resume (issue 28): an interrupted train continues after its last finished epoch and ends with the
bytes of a run never stopped; a state is used only by the same run (params, data, code, device);
SIGTERM keeps it and says how to go on; a corrupt state is refused in one line.

The loop's restore is tested in-process on every knob that holds state (schedules, EMA, SAM, mixing,
online policies, the fine-tuning phase); the stage through `python -m stages.train` and `dvc repro`
after kill -9 and SIGTERM, as a user meets them.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from classifier.runtime import paths
from classifier.augment.online import OnlineAugment
from classifier.models.registry import InputShape, build_model
from classifier.training.loop import Hooks, Keeping, fit_phases
from classifier.training.resume import (KEPT, MINUTES_VARIABLE, STATE_VARIABLE, Identity, StateKeeper, data_digest,
                                       project_root, state_every_seconds, state_folder)
from tests.helpers import copy_project, cpu_data, dvc, env, git, run_stage, run_stage_in_process, set_params
from tests.test_training import CPU, PARAMS, tiny_images

MLP = dataclasses.replace(PARAMS.model, name="mlp", hidden=(16,), dropout=0.3)  # dropout: torch's own stream
BASE = dataclasses.replace(PARAMS.train, epochs=4, batch_size=16, lr=0.05, scheduler="none", patience=0,
                           ema_decay=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, finetune_epochs=0)
MIXED = OnlineAugment(0.6, 0.1, True, 0, policy="trivialaugment", erasing=0.3, mixup_alpha=0.2, cutmix_alpha=0.2,
                      num_classes=3)

CASES = {
    "the default model and train params": (dataclasses.replace(PARAMS.train, epochs=3, batch_size=16, patience=0),
                                           PARAMS.model, None),
    "plain with dropout": (BASE, MLP, None),
    "onecycle, EMA, mixup and cutmix, TrivialAugment, erasing": (
        dataclasses.replace(BASE, scheduler="onecycle", ema_decay=0.9, mixup_alpha=0.2, cutmix_alpha=0.2), MLP, MIXED),
    "warm-up then cosine, SAM with momentum": (
        dataclasses.replace(BASE, scheduler="cosine", warmup_epochs=1, optimizer="sam", momentum=0.9), MLP, None),
    "two-phase fine-tuning with EMA": (
        dataclasses.replace(BASE, epochs=2, finetune_epochs=2, finetune_lr=0.01, ema_decay=0.9, scheduler="step",
                            step_size=1, gamma=0.5), dataclasses.replace(MLP, freeze="features"), None),
}


def run_fit(train, model_params, augment, resume=None, every=0.0):
    """fit_phases as train runs it; each state it keeps as torch.load(weights_only) reads it back."""
    images, labels = tiny_images()
    torch.manual_seed(train.seed)
    model = build_model(model_params, InputShape(1, 12, 12, 3))
    states = []

    def keep(state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        states.append(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    result = fit_phases(model, cpu_data(images, labels, augment=augment), train,
                        Hooks(log=lambda _: None, keep=Keeping(keep, every)), resume=resume)
    return result, states


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
@pytest.mark.parametrize("case", list(CASES))
def test_a_fit_resumed_after_any_epoch_ends_exactly_as_one_never_stopped(case) -> None:
    train, model_params, augment = CASES[case]
    whole, states = run_fit(train, model_params, augment)
    assert len(states) == train.epochs + train.finetune_epochs
    for epoch, state in enumerate(states, start=1):
        resumed, _ = run_fit(train, model_params, augment, resume=state)
        assert same_weights(resumed.last_state, whole.last_state), f"{case}: weights differ after resuming at {epoch}"
        assert same_weights(resumed.best_state, whole.best_state)
        assert resumed.history == whole.history  # wall times aside (not compared)
        assert resumed.steps == whole.steps and resumed.best_epoch == whole.best_epoch
        assert resumed.images_trained == whole.images_trained and resumed.stopped_early == whole.stopped_early


@pytest.mark.parametrize("case", ["plain with dropout", "onecycle, EMA, mixup and cutmix, TrivialAugment, erasing",
                                  "two-phase fine-tuning with EMA"])
@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_fit_resumed_within_an_epoch_ends_exactly_as_one_never_stopped(case) -> None:
    """A state kept after any step (as after every few minutes of a long epoch) resumes exactly too."""
    train, model_params, augment = CASES[case]
    whole, _ = run_fit(train, model_params, augment)
    _, states = run_fit(train, model_params, augment, every=1e-9)  # due after every step
    within = [s for s in states if s["fit"]["random"][0].get("within")]
    assert len(within) == (train.epochs + train.finetune_epochs) * 3  # 4 steps an epoch: after steps 1, 2 and 3
    for state in within:
        resumed, _ = run_fit(train, model_params, augment, resume=state)
        assert same_weights(resumed.last_state, whole.last_state) and same_weights(resumed.best_state, whole.best_state)
        assert resumed.history == whole.history and resumed.steps == whole.steps


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_resume_without_the_random_streams_would_differ() -> None:
    """The test above can fail: drop dropout's generator from a state and the run goes elsewhere."""
    train, model_params, augment = CASES["plain with dropout"]
    whole, states = run_fit(train, model_params, augment)
    state = states[1]
    state["fit"]["random"][0]["torch"] = torch.manual_seed(12345).get_state()
    resumed, _ = run_fit(train, model_params, augment, resume=state)
    assert not same_weights(resumed.last_state, whole.last_state)


# ------------------------------------------------------------------------------ the state file
def identity(**changes) -> Identity:
    params = {"model": {"name": "mlp"}, "train": {"lr": 0.1, "epochs": 10}, "augment": {"online": False}}
    fields = {"params": params, "data": "d" * 16, "code": "c" * 16, "device": "cpu", **changes}
    return Identity(**fields)


def a_state() -> dict:
    return {"phase": "train", "earlier": None, "fit": {"model": {"w": torch.arange(4.0)}}}


def test_a_state_is_resumed_by_its_own_run_and_removed_when_it_completes(tmp_path) -> None:
    lines = []
    keeper = StateKeeper(identity(), 10, lines.append, tmp_path)
    assert keeper.load() is None and lines == []  # nothing saved yet: nothing to say
    keeper.save(a_state(), 3)
    again = StateKeeper(identity(), 10, lines.append, tmp_path)
    loaded = again.load()
    assert torch.equal(loaded["fit"]["model"]["w"], torch.arange(4.0))
    assert len(lines) == 1 and lines[0].startswith("train: resuming from epoch 3 of 10 (state of ")
    assert again.interrupted() == ("outputs being written were discarded; the state of epoch 3 of 10 is kept: "
                                   "`dvc repro` (or the same `dvc exp run`) resumes from it")
    again.remove()
    assert list(tmp_path.iterdir()) == []
    assert again.interrupted() == "outputs being written were discarded; no state had been kept yet, nothing to resume"


@pytest.mark.parametrize("changes, why", [
    ({"params": {"model": {"name": "mlp"}, "train": {"lr": 0.05, "epochs": 10}, "augment": {"online": False}}},
     "is of other params (train.lr 0.1, now 0.05): starting afresh"),
    ({"data": "e" * 16}, "is of other input data: starting afresh"),
    ({"code": "e" * 16}, "is of other training code: starting afresh"),
    ({"device": "cuda"}, "is of another device: starting afresh"),
])
def test_another_runs_state_is_never_used_and_the_line_says_why(tmp_path, monkeypatch, changes, why) -> None:
    monkeypatch.chdir(tmp_path)
    StateKeeper(identity(), 10, folder=tmp_path / "states").save(a_state(), 7)
    lines = []
    assert StateKeeper(identity(**changes), 10, lines.append, tmp_path / "states").load() is None
    assert lines == [f"train: the state of an interrupted run (epoch 7 of 10) {why}"]
    assert len(list((tmp_path / "states").glob("*.pt"))) == 1  # that run may still resume it


def test_the_state_of_a_run_still_training_is_not_called_interrupted(tmp_path, monkeypatch) -> None:
    """A queue trains several experiments at once: a new one says nothing of the others' states."""
    monkeypatch.chdir(tmp_path)
    StateKeeper(identity(), 10, folder=tmp_path / "states").save(a_state(), 7)
    about = next((tmp_path / "states").glob("*.json"))
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        about.write_text(json.dumps({**json.loads(about.read_text()), "pid": running.pid}))
        lines = []
        assert StateKeeper(identity(data="e" * 16), 10, lines.append, tmp_path / "states").load() is None
        assert lines == []
    finally:
        running.kill()
        running.wait()
    lines = []
    StateKeeper(identity(data="e" * 16), 10, lines.append, tmp_path / "states").load()
    assert lines == ["train: the state of an interrupted run (epoch 7 of 10) is of other input data: starting afresh"]


@pytest.mark.parametrize("damage", ["truncated", "foreign", "other identity inside", "epoch past the end"])
def test_a_corrupt_state_is_refused_in_one_line_and_training_starts_afresh(tmp_path, damage) -> None:
    keeper = StateKeeper(identity(), 10, folder=tmp_path)
    keeper.save(a_state(), 3)
    if damage == "truncated":
        keeper.path.write_bytes(keeper.path.read_bytes()[:200])
    elif damage == "foreign":
        torch.save({"w": torch.zeros(2)}, keeper.path)
    elif damage == "epoch past the end":  # it once printed "resuming from epoch 999 of 10"
        keeper.save(a_state(), 999)
    else:
        StateKeeper(identity(data="e" * 16), 10, folder=tmp_path).save(a_state(), 3)
        os.replace(next(p for p in tmp_path.glob("*.pt") if p != keeper.path), keeper.path)
    lines = []
    assert StateKeeper(identity(), 10, lines.append, tmp_path).load() is None
    assert len(lines) == 1 and lines[0].startswith(f"train: the saved state {keeper.path} cannot be used (")
    assert lines[0].endswith("): starting afresh")
    if damage == "epoch past the end":
        assert "(it claims epoch 999 (step 0 of 0) of a 10-epoch run)" in lines[0]
    elif damage != "other identity inside":  # what it is, not torch's page about weights_only
        assert "(not a state of this project" in lines[0] and "weights_only" not in lines[0]
    assert not keeper.path.exists()


@pytest.fixture(scope="module")
def kept_states() -> list[dict]:
    """The states a two-phase fit keeps (its second phase's have an earlier phase inside)."""
    train, model_params, augment = CASES["two-phase fine-tuning with EMA"]
    return run_fit(train, model_params, augment)[1]


@pytest.mark.parametrize("field, why", [
    ("fit.optimizer", "missing field 'fit.optimizer'"),
    ("fit.monitor.waited", "missing field 'fit.monitor.waited'"),
    ("fit.random.0.order", "missing field 'fit.random[0].order'"),
    ("earlier.history", "missing field 'earlier.history'"),
    ("fit.history.0.val_loss", "an epoch's record does not read back (")])
def test_a_state_of_this_run_missing_a_field_is_refused_in_one_line_and_deleted(tmp_path, kept_states, field,
                                                                                why) -> None:
    """Its identity is this run's, so only its layout can tell: checked before anything is put back,
    one line naming the field, deleted, training starts afresh (it was a KeyError on every run)."""
    from classifier.training.loop import check_kept
    state = copy.deepcopy(kept_states[-1])  # the fine-tuning phase's last: every level is there
    keeper = StateKeeper(identity(), 10, folder=tmp_path)
    keeper.save(state, 3)
    assert StateKeeper(identity(), 10, lambda _: None, tmp_path).load(check_kept) is not None
    *path, last = field.split(".")
    inner = state
    for key in path:
        inner = inner[int(key)] if key.isdigit() else inner[key]
    del inner[last]
    keeper.save(state, 3)
    lines = []
    assert StateKeeper(identity(), 10, lines.append, tmp_path).load(check_kept) is None
    assert len(lines) == 1 and lines[0].startswith(f"train: the saved state {keeper.path} cannot be used ({why}")
    assert lines[0].endswith("): starting afresh") and not keeper.path.exists()


def test_a_shared_state_folder_lets_another_clone_resume(tmp_path, monkeypatch) -> None:
    """TRAIN_STATE_DIR on a folder both machines mount: the same run (params, data, code) in another
    clone of the project resumes what the first began."""
    monkeypatch.setenv(STATE_VARIABLE, str(tmp_path / "shared"))
    for clone in ("a", "b"):
        (tmp_path / clone / ".dvc").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    StateKeeper(identity(), 10).save(a_state(), 4)
    monkeypatch.chdir(tmp_path / "b")
    lines = []
    assert StateKeeper(identity(), 10, lines.append).load() is not None
    assert lines[0].startswith("train: resuming from epoch 4 of 10") and str(tmp_path / "shared") in lines[0]


def test_a_state_that_cannot_be_written_costs_resuming_not_the_run(tmp_path) -> None:
    folder = tmp_path / "states"
    folder.write_text("a file where the folder should be")
    lines = []
    keeper = StateKeeper(identity(), 10, lines.append, folder)
    keeper.save(a_state(), 1)
    keeper.save(a_state(), 2)
    assert len(lines) == 1 and lines[0].startswith("train: cannot keep the state of epoch 1 of 10 (")
    assert lines[0].endswith("): training goes on, but this run cannot be resumed")
    assert keeper.interrupted() == "outputs being written were discarded"


def test_a_state_within_an_epoch_says_where_it_stands(tmp_path) -> None:
    keeper = StateKeeper(identity(), 10, folder=tmp_path)
    keeper.save(a_state(), 3, 120, 400)
    assert keeper.interrupted().endswith("; the state of epoch 4 of 10 at step 120 of 400 is kept: `dvc repro` "
                                         "(or the same `dvc exp run`) resumes from it")
    lines = []
    StateKeeper(identity(), 10, lines.append, tmp_path).load()
    assert lines[0].startswith("train: resuming from epoch 4 of 10 at step 120 of 400 (state of ")


@pytest.mark.parametrize("value, seconds", [("", 600.0), ("0", 0.0), ("0.5", 30.0), (" 2 ", 120.0)])
def test_the_state_is_kept_within_an_epoch_every_train_state_minutes(monkeypatch, value, seconds) -> None:
    monkeypatch.setenv(MINUTES_VARIABLE, value)
    assert state_every_seconds() == seconds


@pytest.mark.parametrize("value", ["-1", "ten", "inf", "nan"])
def test_a_bad_train_state_minutes_is_one_line_naming_it(monkeypatch, value) -> None:
    from classifier.runtime.errors import PipelineError
    monkeypatch.setenv(MINUTES_VARIABLE, value)
    with pytest.raises(PipelineError, match=r"^TRAIN_STATE_MINUTES must be a number of minutes >= 0 \(0: a state at "
                                            r"epoch ends only\)\. Got '.*' instead\.$"):
        state_every_seconds()


def test_only_the_newest_states_are_kept(tmp_path) -> None:
    for n in range(KEPT + 2):
        keeper = StateKeeper(identity(data=f"{n:016d}"), 10, folder=tmp_path)
        keeper.save(a_state(), 1)
        os.utime(keeper.path, (n, n))
    kept = sorted(tmp_path.glob("*.pt"), key=lambda p: p.stat().st_mtime)
    assert len(kept) == KEPT and len(list(tmp_path.glob("*.json"))) == KEPT


def test_the_state_folder_of_a_queued_experiment_is_its_projects(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(STATE_VARIABLE, raising=False)
    (tmp_path / ".dvc" / "tmp" / "exps" / "tmpab12").mkdir(parents=True)
    queued = tmp_path / ".dvc" / "tmp" / "exps" / "tmpab12"
    assert project_root(queued) == tmp_path.resolve()
    assert state_folder(queued) == tmp_path.resolve() / ".dvc" / "tmp" / "train-state"
    assert state_folder(tmp_path) == state_folder(queued)
    assert state_folder(tmp_path / ".dvc" / "tmp") is None  # not a DVC project itself: nothing kept
    monkeypatch.setenv(STATE_VARIABLE, str(tmp_path / "shared"))
    assert state_folder(queued) == tmp_path / "shared"


def test_the_data_digest_changes_with_any_byte_of_any_input(tmp_path) -> None:
    (tmp_path / "a" / "train").mkdir(parents=True)
    (tmp_path / "a" / "train" / "images.npy").write_bytes(b"\0" * 1000)
    before = data_digest((tmp_path / "a", tmp_path / "missing"))
    (tmp_path / "a" / "train" / "images.npy").write_bytes(b"\0" * 999 + b"\1")
    assert data_digest((tmp_path / "a", tmp_path / "missing")) != before


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_the_code_digest_is_of_the_files_train_runs(tmp_path, monkeypatch) -> None:
    from classifier.runtime import code_deps as source_files
    copy = copy_project(tmp_path / "p")
    monkeypatch.setattr(source_files, "ROOT", copy)
    before = source_files.code_digest("stages.train")
    with open(copy / "classifier" / "report_only.py", "w") as f:  # no module of train's imports it
        f.write("# not train's\n")
    assert source_files.code_digest("stages.train") == before
    with open(copy / "classifier" / "training" / "optim.py", "a") as f:
        f.write("# an edit\n")
    assert source_files.code_digest("stages.train") != before


# ------------------------------------------------------------------------------ the stage
SLOW = {"data": {"digits_size": 16}, "prepare": {"image_size": 16}, "augment": {"blur_kernels": []},
        "model": {"name": "mlp", "hidden": [32], "dropout": 0.1},
        "train": {"device": "cpu", "epochs": 40, "batch_size": 64, "scheduler": "cosine", "ema_decay": 0.9}}
DETERMINED = (paths.MODEL_FILE, paths.TRAIN_METRICS, paths.HISTORY_FILE, paths.TRAIN_PLOTS / "steps.csv")
WALL_TIMES = {"seconds", "images_per_second"}


def results(project: Path) -> dict:
    """What a run determines: the bytes of model.pt and steps.csv, train.json and history.csv but their
    wall times."""
    found = {}
    for path in DETERMINED:
        if path.suffix == ".json":
            found[path] = {k: v for k, v in json.loads((project / path).read_text()).items() if k not in WALL_TIMES}
        elif path == paths.HISTORY_FILE:
            found[path] = pd.read_csv(project / path).drop(columns="seconds").to_csv()
        else:
            found[path] = (project / path).read_bytes()
    return found


def epochs_done(project: Path) -> int:
    try:
        return json.loads((project / paths.TIME_METRICS).read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def start_train(project: Path, command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=project, env=env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def wait_for_epoch(process: subprocess.Popen, epoch: int) -> list[str]:
    """Until the run prints the line of `epoch` (states, not time: the machine may be slow); the lines."""
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(f"epoch {epoch:>3}/"):
            return lines
    raise AssertionError(f"train ended before epoch {epoch}: {process.communicate()}")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A DVC project with SLOW params whose data stages ran and were committed (a baseline for experiments)."""
    from stages.params import PASSED
    root = copy_project(tmp_path_factory.mktemp("resume") / "p", SLOW)
    git("init", "-q", "-b", "main", cwd=root)
    dvc("init", "-q", cwd=root)
    for stage in ("ingest", "split", "prepare", "augment"):  # in this process: no interpreter starts
        run_stage_in_process(stage, root)
    (root / paths.PARAMS_OK).write_text(PASSED)
    dvc("commit", "-f", "-q", "params", "ingest", "split", "prepare", "augment", cwd=root)  # their dvc.lock
    git("add", "-A", cwd=root)
    git("commit", "-qm", "data", cwd=root)
    return root


@pytest.fixture(scope="module")
def never_stopped(project) -> dict:
    """What train writes with SLOW params when nothing stops it."""
    run = run_stage("train", project)
    assert "resuming" not in run.stdout and "epoch   1/40" in run.stdout
    return results(project)


def states(project: Path) -> list[Path]:
    return list((project / ".dvc" / "tmp" / "train-state").glob("*.pt"))


@pytest.mark.integration
def test_a_killed_experiment_resumes_and_ends_with_the_bytes_of_a_run_never_stopped(project, never_stopped) -> None:
    """kill -9 of `dvc exp run --temp` mid-train: the run's temporary copy of the project under
    .dvc/tmp/exps, where every queued experiment runs too (the same executor, in the foreground). Its
    state is the project's: `dvc repro` in the workspace, the same run (params, data, code), resumes
    it. (A real `dvc queue start` of the same experiment resumed alike, in 50 s: by hand.)"""
    # Niced, with 35 epochs to go: train's 40 epochs take about 2 s (see the SIGTERM test below).
    experiment = start_train(project, ["nice", "-n", "10", sys.executable, "-m", "dvc", "exp", "run", "--temp"])
    wait_for_epoch(experiment, 5)
    os.killpg(experiment.pid, signal.SIGKILL)  # dvc and the stage: a power cut
    experiment.communicate()
    assert states(project), "no state was kept for the killed experiment"
    again = dvc("repro", cwd=project)
    resumed = [line for line in again.stdout.splitlines() if line.startswith("train: resuming")]
    assert len(resumed) == 1 and re.match(r"train: resuming from epoch \d+ of 40 \(state of ", resumed[0]), again.stdout
    assert not states(project), "a completed run leaves no state"
    assert results(project) == never_stopped


@pytest.mark.slow
def test_sigterm_keeps_the_state_and_says_how_to_resume(project, never_stopped) -> None:
    # Early and niced: this MLP trains 40 epochs in about 2 s, and under make test's load this process once
    # read the epoch line so late that the signal found train finished (exit 0). Niced, train gives way to
    # the reader when they compete for a core; the signal at epoch 2 leaves 38 epochs to land in.
    train = start_train(project, ["nice", "-n", "10", sys.executable, "-m", "stages.train"])
    wait_for_epoch(train, 2)
    train.send_signal(signal.SIGTERM)  # what a spot instance, Kubernetes and Slurm send first
    _, err = train.communicate(timeout=120)
    assert train.returncode == 143
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted (SIGTERM); outputs being written were "
                                                   "discarded; the state of epoch "), err
    assert lines[0].endswith(" of 40 is kept: `dvc repro` (or the same `dvc exp run`) resumes from it")
    kept = int(lines[0].split("the state of epoch ")[1].split()[0])
    resumed = run_stage("train", project)
    assert f"train: resuming from epoch {kept} of 40 (state of " in resumed.stdout
    assert f"epoch {kept + 1:>3}/40" in resumed.stdout and f"epoch {kept:>3}/40" not in resumed.stdout
    assert results(project) == never_stopped


@pytest.mark.integration
def test_the_stage_keys_its_state_by_params_data_and_code(project, monkeypatch) -> None:
    """run_state's identity, as the stage makes it: each of a param, a data file and a code file changes it."""
    from classifier.runtime import code_deps as source_files
    from classifier.params.checks import load_sections
    from stages import train
    monkeypatch.chdir(project)
    monkeypatch.setattr(source_files, "ROOT", project)

    def key() -> str:
        return train.run_state(load_sections(*train.PARAMS), CPU, lambda _: None).identity.key
    before = key()
    params_file = project / "params.yaml"
    committed = params_file.read_bytes()
    set_params(project, train={"lr": 0.07})
    assert key() != before
    params_file.write_bytes(committed)
    assert key() == before
    stats = project / paths.STATS_FILE
    original = stats.read_bytes()
    stats.write_bytes(original + b" ")
    assert key() != before
    stats.write_bytes(original)
    optim = project / "classifier" / "training" / "optim.py"
    code = optim.read_bytes()
    optim.write_bytes(code + b"# an edit\n")
    assert key() != before
    optim.write_bytes(code)
    assert key() == before


@pytest.mark.slow
def test_a_data_parallel_run_resumes_with_the_bytes_of_one_never_stopped(project, monkeypatch) -> None:
    """Two processes: a state copied while a run went on to the end, resumed. States are kept within
    epochs too (TRAIN_STATE_MINUTES near 0: every step from the second epoch on), so the copy is
    most likely one within an epoch."""
    monkeypatch.setenv(MINUTES_VARIABLE, "0.000001")
    set_params(project, train={"processes": 2, "epochs": 10})
    try:
        whole = start_train(project, [sys.executable, "-m", "stages.train"])
        wait_for_epoch(whole, 2)  # states within epochs begin with the second
        (saved,) = states(project)
        copy = saved.read_bytes()
        while not torch.load(io.BytesIO(copy), weights_only=True)["step"]:  # until one within an epoch
            assert whole.poll() is None, "the run ended before a state within an epoch was seen"
            copy = saved.read_bytes()
        whole.communicate(timeout=300)
        assert whole.returncode == 0 and not states(project)
        uninterrupted = results(project)
        saved.write_bytes(copy)  # as a kill would have left it
        resumed = run_stage("train", project)
        assert re.search(r"^train: resuming from epoch \d+ of 10 at step \d+ of \d+ ", resumed.stdout, re.M), resumed.stdout
        assert "epoch   1/10" not in resumed.stdout
        assert results(project) == uninterrupted
        assert json.loads((project / paths.TRAIN_METRICS).read_text())["processes"] == 2
    finally:
        set_params(project, train={"processes": 1, "epochs": 40})
