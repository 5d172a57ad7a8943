"""Random search: the distributions, seeded draws and the check that runs before anything is queued."""
from __future__ import annotations

import math

import pytest

from classifier.runtime.errors import PipelineError
from classifier.params.whole_file import read_yaml
from tests.helpers import ROOT
from tools.sweep import as_override, check_combination, draw_combinations, parse_distribution

RAW = read_yaml(ROOT / "params.yaml")


def test_draws_follow_their_distributions_and_repeat_with_the_seed() -> None:
    specs = ["train.lr=loguniform(1e-4, 1e-1)", "model.dropout=uniform(0, 0.5)", "train.epochs=randint(3,5)",
             "train.batch_size=choice(32, 64, 128)", "model.hidden=choice([64], [128, 64])"]
    distributions = [parse_distribution(s) for s in specs]
    draws = draw_combinations(distributions, 400, seed=7)
    assert draws == draw_combinations(distributions, 400, seed=7) != draw_combinations(distributions, 400, seed=8)
    lrs = [d["train.lr"] for d in draws]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs)
    # Log-uniform: each decade gets about a third, not the top decade nine tenths.
    decades = [sum(10 ** (e - 1) <= lr < 10 ** e for lr in lrs) for e in (-3, -2, -1)]
    assert all(100 <= n <= 170 for n in decades), decades
    assert all(0 <= d["model.dropout"] <= 0.5 for d in draws)
    assert {d["train.epochs"] for d in draws} == {3, 4, 5}
    assert {d["train.batch_size"] for d in draws} == {32, 64, 128}
    assert {tuple(d["model.hidden"]) for d in draws} == {(64,), (128, 64)}


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
    with pytest.raises(PipelineError, match="unknown key 'train.lerning_rate' in the sweep"):
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


def test_a_key_given_twice_is_refused(tmp_path, monkeypatch) -> None:
    from tools.sweep import main
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="the sweep gives train.lr more than once"):
        main(["2", "train.lr=uniform(0.01,0.1)", "train.lr=choice(0.5)"])


def test_sweep_names_count_on_past_every_name_in_use() -> None:
    from tools.sweep import free_names
    assert free_names("sweep", 2, set()) == ["sweep-1", "sweep-2"]
    assert free_names("sweep", 2, {"sweep-1", "sweep-3", "lr-sweep-9", "sweep-x"}) == ["sweep-4", "sweep-5"]
    assert free_names("a.b", 1, {"axb-4", "a.b-2"}) == ["a.b-3"]


def test_a_sweep_outside_a_dvc_repository_is_one_error(tmp_path, monkeypatch) -> None:
    from tools.sweep import main
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=f"^{tmp_path} is not a DVC repository: run the sweep from the project root"):
        main(["1", "train.lr=uniform(0.01,0.1)"])


@pytest.mark.slow
def test_a_dvc_command_that_fails_or_hangs_is_one_line(tmp_path, monkeypatch) -> None:
    """The tools' one way to run dvc (report's `exp show`, sweep's `exp run --queue`)."""
    from classifier.runtime.dvc_client import run_dvc
    monkeypatch.chdir(tmp_path)  # not a DVC repository
    with pytest.raises(PipelineError) as failed:
        run_dvc("exp", "show", "--json", context="; rs-1 stays queued")
    message = str(failed.value)
    assert message.startswith("dvc exp show --json failed: ERROR: you are not inside of a DVC repository")
    assert message.endswith("; rs-1 stays queued") and "\n" not in message
    with pytest.raises(PipelineError, match=r"^dvc exp show did not answer in 0.01 s \(why\): run again$"):
        run_dvc("exp", "show", timeout=0.01, why_slow=" (why)")


def test_the_help_names_the_distributions(capsys) -> None:
    from tools import sweep
    with pytest.raises(SystemExit):
        sweep.build_parser().parse_args(["--help"])
    shown = capsys.readouterr().out
    assert all(f"{name}(" in shown for name in ("loguniform", "uniform", "randint", "choice")), shown


def test_a_dvc_lock_held_for_a_moment_is_waited_for(monkeypatch) -> None:
    """`dvc exp run --queue` while a queue worker takes the next experiment: DVC's stash is busy for
    a moment (it failed tools.tune's test once); the command is asked again, and a real failure is not."""
    import subprocess
    from classifier.runtime import dvc_client as dvc_command
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
