"""Search spaces (classifier/experiments/search.py): the distributions, the check that runs before anything
is queued, free names; and the tools' one client of DVC."""
from __future__ import annotations

import math

import pytest

from classifier.runtime.errors import PipelineError
from classifier.params.whole_file import read_yaml
from tests.helpers import ROOT
from classifier.experiments.search import as_override, check_combination, parse_distribution, parse_distributions

RAW = read_yaml(ROOT / "params.yaml")


@pytest.mark.parametrize("spec, message", [
    ("train.lr", "expected KEY=DISTRIBUTION"),
    ("train.lr=gauss(0,1)", "expected KEY=DISTRIBUTION"),
    ("train.lr=loguniform(0, 1)", "loguniform needs LOW > 0"),
    ("train.lr=uniform(0.5, 0.1)", "uniform needs two numbers LOW < HIGH"),
    ("train.epochs=randint(1.5, 3)", "randint needs two integers"),
    ("train.batch_size=choice()", "choice needs at least one value"),
])
def test_a_malformed_distribution_is_one_error_naming_it(spec, message) -> None:
    with pytest.raises(PipelineError, match=message) as error:
        parse_distribution(spec)
    assert repr(spec) in str(error.value)


def test_every_combination_is_checked_against_the_params_rules() -> None:
    check_combination(RAW, {"train.lr": 0.01, "model.hidden": [64]})
    with pytest.raises(PipelineError, match="unknown key 'train.lerning_rate' in the search"):
        check_combination(RAW, {"train.lerning_rate": 0.01})
    with pytest.raises(PipelineError, match="The 'model.dropout' parameter must be a float >= 0 and < 1. Got 1.5"):
        check_combination(RAW, {"model.dropout": 1.5})


def test_overrides_read_back_as_the_drawn_values() -> None:
    assert as_override("train.lr", 0.00123) == "train.lr=0.00123"
    assert as_override("model.hidden", [128, 64]) == "model.hidden=[128,64]"
    assert as_override("model.batch_norm", True) == "model.batch_norm=true"
    assert math.isclose(float(as_override("train.lr", 1e-5).split("=")[1]), 1e-5)


@pytest.mark.parametrize("combination, message", [
    ({"model.name": "resnet9000"}, "The 'model.name' parameter must be one of .* Got 'resnet9000'"),
    ({"augment.blur_kernels": [99]}, r"kernels no wider than the 32×32 prepared images"),
    ({"train.finetune_epochs": 3}, "The 'train.finetune_epochs' parameter needs model.freeze: features"),
])
def test_a_drawn_combination_the_stages_would_reject_queues_nothing(combination, message) -> None:
    with pytest.raises(PipelineError, match=message) as error:
        check_combination(RAW, combination)
    assert "nothing was queued" in str(error.value)
    check_combination(RAW, {"model.name": "mlp", "augment.blur_kernels": [31]})  # the same keys, allowed values


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(PipelineError, match="the search gives train.lr more than once"):
        parse_distributions(["train.lr=uniform(0.01,0.1)", "train.lr=choice(0.5)"], "search")


def test_names_count_on_past_every_name_in_use() -> None:
    from classifier.experiments.search import free_names
    assert free_names("sweep", 2, set()) == ["sweep-1", "sweep-2"]
    assert free_names("sweep", 2, {"sweep-1", "sweep-3", "lr-sweep-9", "sweep-x"}) == ["sweep-4", "sweep-5"]
    assert free_names("a.b", 1, {"axb-4", "a.b-2"}) == ["a.b-3"]


def test_a_search_outside_a_dvc_repository_is_one_error(tmp_path, monkeypatch) -> None:
    from classifier.experiments.dvc_client import taken_names
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=f"^{tmp_path} is not a DVC repository: run the search from the project root"):
        taken_names()


@pytest.mark.slow
def test_a_dvc_command_that_fails_or_hangs_is_one_line(tmp_path, monkeypatch) -> None:
    """The tools' one way to run dvc (report's `exp show`, tune's `exp run --queue`)."""
    from classifier.experiments.dvc_client import run_dvc
    monkeypatch.chdir(tmp_path)  # not a DVC repository
    with pytest.raises(PipelineError) as failed:
        run_dvc("exp", "show", "--json", context="; rs-1 stays queued")
    message = str(failed.value)
    assert message.startswith("dvc exp show --json failed: ERROR: you are not inside of a DVC repository")
    assert message.endswith("; rs-1 stays queued") and "\n" not in message
    with pytest.raises(PipelineError, match=r"^dvc exp show did not answer in 0.01 s \(why\): run again$"):
        run_dvc("exp", "show", timeout=0.01, why_slow=" (why)")


def test_the_help_names_the_distributions_and_the_random_sweep(capsys) -> None:
    from tools import tune
    with pytest.raises(SystemExit):
        tune.build_parser().parse_args(["--help"])
    shown = capsys.readouterr().out
    assert all(f"{name}(" in shown for name in ("loguniform", "uniform", "randint", "choice")), shown
    assert "--sampler random --pruner none" in shown


def test_a_dvc_lock_held_for_a_moment_is_waited_for(monkeypatch) -> None:
    """`dvc exp run --queue` while a queue worker takes the next experiment: DVC's stash is busy for
    a moment (it failed tools.tune's test once); the command is asked again, and a real failure is not."""
    import subprocess
    from classifier.experiments import dvc_client as dvc_command
    busy = subprocess.CompletedProcess([], 255, "", "ERROR: 'refs/exps/celery/stash' is busy, it is being blocked by: (PID 1)")
    answers = [busy, busy, subprocess.CompletedProcess([], 0, "queued", "")]
    calls = []
    monkeypatch.setattr(dvc_command.subprocess, "run", lambda *a, **k: calls.append(a) or answers.pop(0))
    monkeypatch.setattr(dvc_command, "BUSY_WAIT_SECONDS", 0)
    assert dvc_command.run_dvc("exp", "run", "--queue") == "queued" and len(calls) == 3
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: unknown params")
    answers[:] = [failed]
    with pytest.raises(PipelineError, match="dvc exp run --queue failed: ERROR: unknown params"):
        dvc_command.run_dvc("exp", "run", "--queue")
    assert len(calls) == 4  # not asked again


def test_queue_states_are_read_from_dvc_queue_status(monkeypatch) -> None:
    """DVC's public table (`dvc queue status`, its layout captured from DVC 3.67, which lists running,
    queued, failed, then successful entries), not its celery internals: a name queued again after it
    failed or succeeded takes the state still to end; a nameless entry is skipped."""
    from classifier.experiments import dvc_client
    table = ("Task     Name    Created       Status\n"
             "5c3bd2e  t-2     10:41 PM      Running\n"
             "a1b2c3d  t-3     10:42 PM      Queued\n"
             "1a2b3c4  t-1     10:43 PM      Queued\n"
             "0d9e8f7          10:40 PM      Failed\n"
             "9f8e7d6  t-1     Dec 05, 2026  Failed\n"
             "7e6d5c4  t-0     10:39 PM      Success\n"
             "8e7d6c5  t-2     10:38 PM      Success\n"
             "\nWorker status: 1 active, 0 idle\n")
    monkeypatch.setattr(dvc_client, "run_dvc", lambda *args, **kw: table)
    assert dvc_client.queue_states() == {"t-0": "done", "t-1": "queued", "t-2": "running", "t-3": "queued"}
