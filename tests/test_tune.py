"""tools.tune (issue 29): Bayesian search with pruning, each trial a DVC experiment; train's side
(classifier/training/tuning.py) and the study report (tools.report --study)."""
from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from classifier.runtime.errors import PipelineError
from classifier.params.tune import TuneParams
from classifier.training.loop import EpochRecord
from classifier.training.tuning import FOLDER_VARIABLE, TrialReport, journal_path
from tests.helpers import ROOT, copy_of, dvc, env, run_stage_in_process, set_params, stop_queue_workers
from tools import tune
from classifier.experiments.study import load, ranked, report, reproduce_line
from classifier.experiments.search import parse_distribution


@pytest.fixture
def journals(tmp_path, monkeypatch) -> Path:
    """Study journals in a folder of the test's own, and params.yaml the project's."""
    monkeypatch.setenv(FOLDER_VARIABLE, str(tmp_path / "journals"))
    monkeypatch.chdir(ROOT)
    return tmp_path / "journals"


def new_study(name: str, *flags: str):
    args = tune.build_parser().parse_args(["1", "train.lr=loguniform(1e-4,1)", "--study", name, *flags])
    return tune.open_study(args)


def record(epoch: int, val_loss: float) -> EpochRecord:
    return EpochRecord(epoch, 0.1, val_loss, val_loss, 0.5, val_loss, 0.5)


@pytest.mark.parametrize("spec, message", [
    (["train.lr=uniform(-1,1)"], "'train.lr' parameter must be a float > 0"),      # a range's end the stages refuse
    (["train.lerning=uniform(0,1)"], "unknown key 'train.lerning'"),
    (["train.optimizer=choice(sgd,adamm)"], "train.optimizer"),                     # each choice is checked
    (["tune.trial=randint(0,3)"], "set by tools.tune"),
    (["train.lr=uniform(0.1,1)", "train.lr=uniform(0.2,1)"], "more than once"),
    (["train.lr=normal(0,1)"], "expected KEY=DISTRIBUTION"),
])
def test_a_bad_spec_is_one_line_and_makes_nothing(spec, message, journals, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(tune, "run_dvc", lambda *args, **kw: calls.append(args))
    monkeypatch.setattr(tune, "start_workers", lambda jobs: calls.append(("queue", "start")))
    monkeypatch.setattr(tune, "search", lambda *args: calls.append(("search",)))
    with pytest.raises(PipelineError, match=re.escape(message)):
        tune.main(["4", *spec, "--study", "bad"])
    assert calls == [] and not journals.exists()  # nothing queued, no study made


def test_dvcs_workers_are_started_when_a_trial_is_queued_or_trials_wait_with_none_running(monkeypatch) -> None:
    """`dvc queue start -j J` starts the workers not running (idle ones stop after 10 s); not asked when
    nothing changed, since each call costs a second of CPU."""
    started = []
    monkeypatch.setattr(tune, "start_workers", started.append)
    queue = tune.DvcQueue()
    queue.keep_running(2, queued_now=False, stalled=False)
    assert started == []
    queue.keep_running(2, queued_now=True, stalled=False)
    queue.keep_running(3, queued_now=False, stalled=True)
    assert started == [2, 3]


def test_bad_counts_and_names_are_refused_before_anything(journals) -> None:
    for argv, message in ((["0", "x"], "KEY=DISTRIBUTION"), (["1001", "train.lr=uniform(0.1,1)"], "0 to 1000"),
                          (["2", "train.lr=uniform(0.1,1)", "--jobs", "0"], "--jobs"),
                          (["2", "train.lr=uniform(0.1,1)", "--study", "a b"], "--study")):
        with pytest.raises(PipelineError, match=re.escape(message)):
            tune.main(argv)
    assert not journals.exists()


def test_more_threads_than_cores_across_the_trials_at_once_is_said() -> None:
    """--jobs 2 with train.cpu_threads 2 on 2 cores: a line with the threads to set; none when they fit,
    with one job, with train.cpu_threads 0 (all cores, PyTorch's choice) or when the search sets it."""
    lr = parse_distribution("train.lr=loguniform(1e-4,1)")
    params = {"train": {"cpu_threads": 2}}
    line = tune.threads_line(params, 2, [lr], cores=2)
    assert line.startswith("tune: 2 trials at once x train.cpu_threads 2 = 4 threads on 2 cores: ") and \
        line.endswith("set train.cpu_threads to 1 in params.yaml, or give fewer --jobs")
    assert tune.threads_line(params, 2, [lr], cores=4) == tune.threads_line(params, 1, [lr], cores=2) == ""
    assert tune.threads_line({"train": {"cpu_threads": 0}}, 2, [lr], cores=2) == ""
    assert tune.threads_line(params, 2, [lr, parse_distribution("train.cpu_threads=choice(1,2)")], cores=2) == ""


def test_values_drawn_are_those_queued() -> None:
    """Choices map back to their YAML values (lists, booleans), log ranges are rounded as queued."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    specs = [parse_distribution(s) for s in ("model.hidden=choice([64,32],[128])", "train.nesterov=choice(true,false)",
                                             "train.lr=loguniform(1e-4,1e-1)", "train.epochs=randint(2,4)")]
    for _ in range(10):
        hidden, nesterov, lr, epochs = (tune.suggest(study.ask(), d) for d in specs)
        assert hidden in ([64, 32], [128]) and nesterov in (True, False)
        assert 1e-4 <= lr <= 1e-1 and lr == float(f"{lr:.3g}")
        assert isinstance(epochs, int) and 2 <= epochs <= 4


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_the_sampler_learns_from_finished_trials(journals) -> None:
    """On a known objective (lr = 1e-2 is best), TPE's last ten draws of thirty lie far nearer the
    optimum than the random sampler's: it draws where the finished trials scored well."""
    lr = parse_distribution("train.lr=loguniform(1e-4,1)")
    last_ten = {}
    for sampler in ("tpe", "random"):
        study, _ = new_study(sampler, "--sampler", sampler)
        distances = []
        for _ in range(30):
            trial = study.ask()
            distances.append(abs(math.log10(tune.suggest(trial, lr)) + 2))
            study.tell(trial, distances[-1])
        last_ten[sampler] = statistics.median(distances[-10:])
    assert last_ten["tpe"] < 0.6 * last_ten["random"], last_ten


def test_a_study_goes_on_with_its_settings_and_refuses_others(journals) -> None:
    study, settings = new_study("s", "--pruner", "halving", "--objective", "val_accuracy")
    study.tell(study.ask(), 0.5)
    again, kept = new_study("s")  # no flags: the study's own
    assert (kept.pruner, kept.objective, len(again.trials)) == ("halving", "val_accuracy", 1)
    assert again.direction == optuna.study.StudyDirection.MAXIMIZE
    with pytest.raises(PipelineError, match="made with --pruner halving"):
        new_study("s", "--pruner", "median")
    assert journal_path("s") == journals / "s.journal"


def test_train_reports_each_epoch_and_the_median_pruner_stops_a_bad_trial(journals) -> None:
    study, _ = new_study("p", "--prune-after-trials", "2", "--prune-after-epochs", "1")
    lines = []
    for _ in range(2):  # two complete trials at val loss 0.5, 0.4, 0.3
        trial = study.ask()
        report = TrialReport(TuneParams("p", trial.number), lines.append)
        assert not any(report.after_epoch(record(e, 0.6 - 0.1 * e)) for e in (1, 2, 3))
        report.ended(False, record(3, 0.3))
    good, bad = study.ask(), study.ask()
    assert not TrialReport(TuneParams("p", good.number), lines.append).after_epoch(record(1, 0.45))
    bad_report = TrialReport(TuneParams("p", bad.number), lines.append)
    assert bad_report.after_epoch(record(1, 2.3))  # worse than the median at epoch 1: pruned
    bad_report.ended(True, record(1, 2.3))
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "RUNNING", "PRUNED"]
    assert trials[0].value == 0.3 and trials[0].intermediate_values == pytest.approx({1: 0.5, 2: 0.4, 3: 0.3})
    ended = TrialReport(TuneParams("p", 0), lines.append)  # an ended trial run again: reports nothing
    assert not ended.active and not ended.after_epoch(record(1, 9.0)) and "already ended (complete)" in lines[-1]
    TrialReport(TuneParams("p", good.number), lines.append).failed()
    assert study.get_trials()[good.number].state.name == "FAIL"


def test_a_trial_at_chance_level_is_pruned_before_any_trial_is_complete(journals) -> None:
    """Ten classes: val loss ln 10 (2.303) with val accuracy 10% learnt nothing. After the epochs every
    trial runs (--prune-after-epochs 2) it is pruned though the median pruner has no complete trial
    to compare with; not before, not when it learns or is merely overconfident, never without a pruner."""
    study, _ = new_study("c", "--prune-after-epochs", "2")
    lines = []

    def epoch(number: int, val_loss: float, val_accuracy: float) -> EpochRecord:
        return EpochRecord(number, 0.1, val_loss, val_loss, val_accuracy, val_loss, val_accuracy)
    hopeless = TrialReport(TuneParams("c", study.ask().number), lines.append, classes=10)
    assert not hopeless.after_epoch(epoch(1, 2.303, 0.10))   # the first epoch: every trial runs it
    assert hopeless.after_epoch(epoch(2, 2.303, 0.11))
    assert lines[-1] == ("train: val loss 2.303 (a uniform guess: 2.303) and val accuracy 11.0% after epoch 2: at "
                         "chance level, nothing learnt; pruned whatever the other trials")
    learning = TrialReport(TuneParams("c", study.ask().number), lines.append, classes=10)
    assert not learning.after_epoch(epoch(2, 1.9, 0.45))
    overconfident = TrialReport(TuneParams("c", study.ask().number), lines.append, classes=10)
    assert not overconfident.after_epoch(epoch(2, 2.6, 0.80))
    sweep, _ = new_study("sweep", "--pruner", "none")
    assert not TrialReport(TuneParams("sweep", sweep.ask().number), lines.append, classes=10).after_epoch(
        epoch(3, 2.31, 0.1))


def test_a_resumed_trial_reports_the_epochs_it_did_not_run_itself(journals) -> None:
    """A state kept by another run with the same params (resume is exact): its history is reported
    first, each epoch once, so the pruner compares whole curves."""
    study, _ = new_study("r")
    trial = study.ask()
    trial.report(0.9, 1)  # this trial's own first epoch, before it was killed
    report = TrialReport(TuneParams("r", trial.number), print)
    report.resumed([record(1, 0.8), record(2, 0.7)])
    report.after_epoch(record(3, 0.6))
    assert study.get_trials()[0].intermediate_values == pytest.approx({1: 0.9, 2: 0.7, 3: 0.6})


def test_a_run_outside_a_study_never_prunes_and_a_missing_study_is_one_line(journals) -> None:
    outside = TrialReport(TuneParams("", 0), print)
    assert not outside.active and not outside.after_epoch(record(1, 99.0))
    with pytest.raises(PipelineError, match=r"tune.study 'nowhere': no study journal at .*nowhere.journal"):
        TrialReport(TuneParams("nowhere", 0), print)
    new_study("s")
    with pytest.raises(PipelineError, match="tune.trial 7: study 's' has no such trial"):
        TrialReport(TuneParams("s", 7), print)


@pytest.mark.parametrize("content, reason", [
    (bytes(range(256)) * 20, "UnicodeDecodeError"),                         # random bytes
    (b'{"op_code": 0, "worker_id": "w"}\n', "KeyError: 'study_name'"),      # a log missing a field
], ids=["random bytes", "a log missing a field"])
def test_a_damaged_journal_is_one_line_naming_it(journals, content, reason) -> None:
    """tools.report --study (and train's trial) on a journal that is not one: a traceback before."""
    path = journal_path("damaged")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=rf"^--study damaged: .*damaged.journal is not an Optuna study journal "
                                            rf"\({reason}.*\): damaged, or another file; move it away"):
        load("damaged")
    new_study("kept")
    journal_path("kept").rename(journal_path("other"))  # a whole journal, of another study's name
    with pytest.raises(PipelineError, match=r"^--study other: .*other.journal holds no study of that name$"):
        load("other")


def test_a_failed_experiment_is_recorded_failed_and_named(journals, capsys) -> None:
    """The controller's look at DVC's queue: a trial whose run died before telling its end (kill -9, a
    failed setup) is recorded failed, with the command that shows why; the others wait."""
    study, settings = new_study("f")
    dead, alive = study.ask(), study.ask()
    flight = tune.InFlight({"f-1": dead.number, "f-2": alive.number})
    tune.settle(study, settings, flight, {"f-1": "failed", "f-2": "running"})
    assert study.get_trials()[dead.number].state.name == "FAIL" and list(flight.trials) == ["f-2"]
    assert "f-1 (trial 0) failed after 0 epochs" in capsys.readouterr().out


def test_ctrl_c_lists_the_trials_left_queued_and_running_with_their_commands(journals, monkeypatch) -> None:
    """Ctrl-C of the controller: the queued trials with the command that removes them, the running
    ones with the one that stops them (they report to the study as they end)."""
    from classifier.runtime.errors import Stopped
    study, settings = new_study("c")
    monkeypatch.setattr(tune, "taken_names", lambda: set())
    monkeypatch.setattr(tune, "adopt_running", lambda study, flight: None)
    monkeypatch.setattr(tune, "start_workers", lambda jobs: None)
    monkeypatch.setattr(tune, "queue_states", lambda: {"c-1": "running", "c-2": "queued"})

    def queue_trial(study, distributions, name, raw, flight) -> None:
        if len(flight.trials) == 2:
            raise KeyboardInterrupt
        flight.trials[name] = len(flight.trials)
    monkeypatch.setattr(tune, "queue_trial", queue_trial)
    with pytest.raises(Stopped) as stopped:
        tune.search(study, settings, [parse_distribution("train.lr=uniform(0.1,1)")], 3, 3)
    message = stopped.value.note
    assert "c-2 stay queued: `dvc queue remove c-2` removes them" in message, message
    assert "c-1 still run and report to the study as they end (`dvc queue kill c-1` stops them)" in message


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_the_report_ranks_trials_and_gives_the_best_as_a_command(journals, tmp_path) -> None:
    study, settings = new_study("r")
    for lr, value, state in ((0.1, 0.3, "complete"), (0.01, 0.2, "complete"), (1e-5, 2.3, "pruned"), (9.0, None, "fail")):
        trial = study.ask()
        trial.suggest_float("train.lr", 1e-6, 10, log=True)
        trial.set_user_attr("experiment", f"r-{trial.number + 1}")
        trial.set_user_attr("overrides", [f"train.lr={lr}"])
        if state == "complete":
            study.tell(trial, value)
        elif state == "pruned":
            trial.report(value, 1)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    rows, settings = load("r")
    assert [r.experiment for r in ranked(rows, settings)] == ["r-2", "r-1", "r-3", "r-4"]
    assert reproduce_line(ranked(rows, settings)[0]) == "dvc exp run -S 'train.lr=0.01'"
    text = report("r", tmp_path / "pictures")
    assert "2 complete, 1 pruned, 1 failed" in text and "dvc exp run -S 'train.lr=0.01'" in text
    history = (tmp_path / "pictures" / "history.csv").read_text().splitlines()
    assert history[1:3] == ["0,0.3,0.3,complete", "1,0.2,0.2,complete"] and history[3].startswith("2,2.3,0.2,pruned")
    from tests.helpers import assert_picture
    for name in ("history.png", "params.png"):
        assert_picture(tmp_path / "pictures" / name)
    with pytest.raises(PipelineError, match=r"^--study missing: no study journal at .*missing\.journal \(python -m "
                                            r"tools\.tune --study missing makes it\)$"):
        report("missing")


def study_trials(project: Path, study: str) -> list:
    from classifier.training.tuning import open_storage
    path = project / ".dvc" / "tmp" / "tune" / f"{study}.journal"
    if not path.is_file():
        return []
    storage = open_storage(path)
    try:
        study_id = storage.get_study_id_from_name(study)
    except KeyError:  # polled between the journal file's creation and the study's first record
        return []
    return storage.get_all_trials(study_id)


def wait_for(condition, what: str, minutes: float = 10):
    """Polls `condition` (states, not time: the machine can be slow) until it holds."""
    deadline = time.monotonic() + 60 * minutes
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen in {minutes} minutes"
        time.sleep(0.5)
    return result


@pytest.mark.integration
def test_trials_through_dvcs_queue_prune_an_absurd_rate_and_survive_a_killed_controller(
        trained_template, tmp_path) -> None:
    """The issue's test with the real dvc and the tests' MLP. Two trials of train.lr in {0.1, 1e-6}, one
    at a time: the random sampler's seed 28 draws the sensible rate first, then the absurd one (nothing
    is learnt), so that the median pruner (from the first complete trial on, from epoch 1) judges it
    against the first. tools.tune is killed (kill -9) as its last trial trains: the trial still reports
    to the journal. The absurd one is pruned after fewer epochs than the other, and both are rows of
    `dvc exp show` (the pruned one says `pruned: true`), scored by evaluate. (A third trial, another
    absurd rate, took the same path: 25 s of the suite for nothing new.)"""
    project = copy_of(trained_template, tmp_path / "p")
    command = [sys.executable, "-m", "tools.tune", "2", "train.lr=choice(0.1,0.000001)", "--study", "t",
               "--sampler", "random", "--seed", "28", "--prune-after-trials", "1", "--prune-after-epochs", "1"]
    try:
        controller = subprocess.Popen(command, cwd=project, env=env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        try:  # killed once its last trial trains (it reported an epoch): DVC's worker runs on
            wait_for(lambda: controller.poll() is not None or (
                len(trials := study_trials(project, "t")) == 2 and trials[1].intermediate_values),
                "the last trial training")
        finally:
            controller.kill()
            output = controller.communicate()[0]
        assert re.findall(r"queued (t-\d) \(trial (\d)\)", output) == [("t-1", "0"), ("t-2", "1")], output
        trials = wait_for(lambda: (t := study_trials(project, "t")) and all(x.state.is_finished() for x in t) and t,
                          "every trial's end in the journal")
    finally:
        stop_queue_workers(project)
    lrs = [float(t.user_attrs["overrides"][0].split("=")[1]) for t in trials]
    assert lrs == [0.1, 1e-6], f"the seed's draws changed: {lrs}"
    assert trials[0].state.name == "COMPLETE" and len(trials[0].intermediate_values) == 10
    assert all(t.state.name == "PRUNED" and len(t.intermediate_values) < 10 for t in trials[1:])
    rows = {e["name"]: e["revs"][0]["data"] for row in json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
            for e in row.get("experiments") or [] if e.get("name")}
    for trial in trials:
        data = rows[trial.user_attrs["experiment"]]
        progress = data["metrics"]["metrics/time.json"]["data"]
        assert progress["pruned"] is (trial.state.name == "PRUNED")
        assert progress["epoch"] == len(trial.intermediate_values) and "metrics/summary.json" in data["metrics"]
        assert data["params"]["params.yaml"]["data"]["tune"] == {"study": "t", "trial": trial.number}
    shown = subprocess.run([sys.executable, "-m", "tools.report", "--study", "t"], cwd=project, env=env(),
                           capture_output=True, text=True, check=True).stdout
    assert "2 trials (1 complete, 1 pruned)" in shown, shown
    assert "dvc exp run -S 'train.lr=0.1'" in shown and (project / "plots/tune/t/history.png").is_file()


@pytest.mark.integration
def test_a_trial_whose_loss_turns_nan_is_recorded_failed(trained_template, tmp_path) -> None:
    """Train in a trial with an absurdly high rate: the loss diverges, the stage fails in one line, and
    the study records the trial failed (the search goes on: the controller's look is test_a_failed_...)."""
    project = copy_of(trained_template, tmp_path / "p")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        study, _ = new_study("nan", "--pruner", "none")  # a pruner would end it at chance level before the NaN
        trial = study.ask()
    set_params(project, train={"lr": 100.0}, tune={"study": "nan", "trial": trial.number})
    with pytest.raises(PipelineError, match="(?i)nan|not finite|diverged"):
        run_stage_in_process("train", project)
    assert study_trials(project, "nan")[0].state.name == "FAIL"
