"""The experiments report: rows from `dvc exp show --json`, differing params, sorting, seed means."""
from __future__ import annotations

import numpy as np
import pytest

from classifier.experiments.table import (Experiment, aggregate_seeds, differing_params, experiments_from_json, flatten,
                                          markdown_table, seeds_table)


def rev(name: str | None, lr: float, seed: int, val: float, test: float) -> dict:
    """One revision as `dvc exp show --json` gives it."""
    return {"rev": f"{abs(hash(name)):040x}", "name": name, "data": {
        "params": {"params.yaml": {"data": {"train": {"lr": lr, "seed": seed, "epochs": 5}, "model": {"name": "mlp"}}}},
        "metrics": {"metrics/summary.json": {"data": {"val_acc": val, "test_acc": test, "best_epoch": 4,
                                                      "flag": False}}}}}


SHOW = [
    {**rev(None, 0.1, 0, 0.90, 0.89), "rev": "workspace"},  # the same results as main: not a row of its own
    {**rev("main", 0.1, 0, 0.90, 0.89), "experiments": [
        {"name": "a", "revs": [rev("a", 0.01, 0, 0.95, 0.94)]},
        {"name": "b", "revs": [rev("b", 0.01, 1, 0.93, 0.92)]},
        {"name": "c", "revs": [rev("c", 0.01, 2, 0.97, 0.96)]},
        {"name": "d", "revs": [rev("d", 0.1, 1, 0.80, 0.81)]},
    ]},
]


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": 1, "a.c": [1, 2], "d": "x"}


def test_rows_params_and_metrics_come_from_dvc_json() -> None:
    experiments = experiments_from_json(SHOW)
    assert [e.name for e in experiments] == ["main", "a", "b", "c", "d"]
    assert experiments[1].params["train.lr"] == 0.01 and experiments[1].metrics["val_acc"] == 0.95
    assert "flag" not in experiments[1].metrics  # flags are no numbers to average
    assert differing_params(experiments) == ["train.lr", "train.seed"]


def test_table_sorted_by_val_accuracy_with_the_differing_params() -> None:
    table = markdown_table(experiments_from_json(SHOW), "val_acc")
    lines = table.splitlines()
    assert lines[0] == "| experiment | state | train.lr | train.seed | val_acc | test_acc |"
    assert [line.split(" | ")[0].strip("| ") for line in lines[2:]] == ["c", "a", "b", "main", "d"]
    assert "| c | done | 0.01 | 2 | 0.9700 | 0.9600 |" in lines


def test_seed_aggregation_gives_the_right_mean_and_std() -> None:
    groups = {g.params["train.lr"]: g for g in aggregate_seeds(experiments_from_json(SHOW))}
    three = groups[0.01]
    assert sorted(three.runs) == ["a", "b", "c"]
    assert three.mean["val_acc"] == pytest.approx(np.mean([0.95, 0.93, 0.97]))
    assert three.std["val_acc"] == pytest.approx(np.std([0.95, 0.93, 0.97], ddof=1))
    assert groups[0.1].mean["test_acc"] == pytest.approx(0.85)
    table = seeds_table(list(groups.values()), "val_acc")
    assert table.splitlines()[2].startswith("| 3 | 0.01 | 0.9500 ± 0.0200 |")


def test_a_seed_run_equal_to_the_committed_one_is_counted_once() -> None:
    """`train.seed=range(0,2)` queued on a commit trained with seed 0: that experiment and the commit are
    one run, and the mean is over seeds 0 and 1, not 0, 0 and 1."""
    show = [{**SHOW[1], "experiments": [{"name": "s0", "revs": [rev("s0", 0.1, 0, 0.90, 0.89)]},
                                        {"name": "s1", "revs": [rev("s1", 0.1, 1, 0.80, 0.79)]}]}]
    (group,) = aggregate_seeds(experiments_from_json(show))
    assert group.runs == ["main", "s1"]
    assert group.mean["val_acc"] == pytest.approx(0.85)
    assert group.std["val_acc"] == pytest.approx(np.std([0.90, 0.80], ddof=1))


def test_a_workspace_with_new_results_is_a_row() -> None:
    show = [{**rev(None, 0.3, 0, 0.5, 0.5), "rev": "workspace"}, rev("main", 0.1, 0, 0.9, 0.9)]
    assert [e.name for e in experiments_from_json(show)] == ["workspace", "main"]


def test_rows_without_a_metric_sort_last() -> None:
    rows = [Experiment("no-metrics", {"train.lr": 1}, {}), Experiment("scored", {"train.lr": 2}, {"val_acc": 0.5})]
    table = markdown_table(rows, "val_acc")
    assert [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]] == ["scored", "no-metrics"]
    assert "| no-metrics | done | 1 | - |" in table


def with_state(revision: dict, state: str, live: dict | None = None) -> dict:
    """An experiment of `dvc exp show --json` whose executor is in `state`; its workspace still holds the
    baseline's summary.json (queued, failed), or its own live metrics/time.json (running)."""
    if live is not None:  # beside the baseline's summary.json, still there until its train stage starts
        revision["data"]["metrics"]["metrics/time.json"] = {"data": live}
    return {"name": revision["name"], "revs": [revision], "executor": {"state": state, "name": revision["name"]}}


def test_queued_running_and_failed_experiments_never_wear_other_runs_numbers(monkeypatch, capsys) -> None:
    show = [{**rev("main", 0.1, 0, 0.90, 0.89), "experiments": [
        with_state(rev("q", 0.01, 0, 0.90, 0.89), "queued"),
        with_state(rev("r", 0.02, 0, 0.90, 0.89), "running", live={"epoch": 7, "seconds": 3.5}),
        with_state(rev("f", 0.03, 0, 0.90, 0.89), "failed"),
        with_state(rev("s", 0.04, 0, 0.97, 0.96), "success"),
    ]}]
    experiments = {e.name: e for e in experiments_from_json(show)}
    assert {name: e.state for name, e in experiments.items()} == {
        "main": "done", "q": "queued", "r": "running", "f": "failed", "s": "done"}
    assert experiments["q"].metrics == {} and experiments["f"].metrics == {}
    assert experiments["r"].metrics == {"epoch": 7, "seconds": 3.5}
    table = markdown_table(list(experiments.values()), "val_acc")
    assert "| r | running | 0.02 | - | - | 7 | 3.5 |" in table, table  # epochs whole, seconds to a tenth
    assert "| q | queued | 0.01 | - | - | - | - |" in table and "0.89" not in table.split("| main |")[0]
    from tools import report
    monkeypatch.setattr(report, "dvc_experiments", lambda: show)
    report.main(["--seeds"])
    seeds = capsys.readouterr().out
    assert "| 1 | 0.04 |" in seeds and "| 1 | 0.1 |" in seeds and len(seeds.splitlines()) == 4, seeds


def test_per_class_scores_read_as_a_table_worst_first(tmp_path, monkeypatch, capsys) -> None:
    import json
    from tools import report
    per_class = {"test": {"cat": {"accuracy": 0.9, "precision": 0.8, "recall": 0.9, "f1": 0.847, "support": 10},
                          "dog": {"accuracy": 0.5, "precision": 0.6, "recall": 0.5, "f1": 0.545, "support": 8}},
                 "val": {"cat": {"f1": 1.0, "support": 2}}}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/per_class.json").write_text(json.dumps(per_class))
    monkeypatch.chdir(tmp_path)
    report.main(["--per-class"])
    assert capsys.readouterr().out.splitlines() == [
        "| class | accuracy | precision | recall | f1 | support |", "|---|---|---|---|---|---|",
        "| dog | 0.5000 | 0.6000 | 0.5000 | 0.5450 | 8 |", "| cat | 0.9000 | 0.8000 | 0.9000 | 0.8470 | 10 |"]
    with pytest.raises(report.PipelineError, match="has no split 'train'; splits: test, val"):
        report.main(["--per-class", "--split", "train"])


def test_the_live_test_reads_the_most_advanced_of_a_finishing_experiments_two_rows() -> None:
    """`dvc exp show` listed a finishing experiment twice (its running entry and its result): the
    live-queue test must take the result, not fail on the pair."""
    from tests.helpers import most_advanced
    running = {"Experiment": "live", "State": "Running", "epoch": "19"}
    done = {"Experiment": "live", "State": "Success", "epoch": "20"}
    assert most_advanced([running, done]) is done and most_advanced([done, running]) is done
    assert most_advanced([]) == {"State": "Queued"}
    assert most_advanced([{"State": "Running", "epoch": "!"}, {"State": "Running", "epoch": "3"}])["epoch"] == "3"


def test_bad_output_and_sort_by_are_one_line_before_any_work(tmp_path, monkeypatch, capsys) -> None:
    from tools import report
    asked = []
    monkeypatch.setattr(report, "dvc_experiments", lambda: asked.append(1) or SHOW)
    with pytest.raises(report.PipelineError, match=f"-o {tmp_path}: is a folder; give a file, e.g. -o {tmp_path}/report.md"):
        report.main(["-o", str(tmp_path)])
    assert not asked  # refused before `dvc exp show`
    with pytest.raises(report.PipelineError, match="--sort-by val_accuracy: no experiment has that metric; "
                                                   "metrics: best_epoch, test_acc, val_acc"):
        report.main(["--sort-by", "val_accuracy"])
    report.main(["-o", str(tmp_path / "new/folder/report.md")])  # a missing folder is made
    assert (tmp_path / "new/folder/report.md").read_text() == capsys.readouterr().out
    (tmp_path / "notes").write_text("mine")  # a file where a folder of the path would be: one line, nothing written
    with pytest.raises(report.PipelineError, match=f"^cannot write {tmp_path}/notes/sub/report.md: {tmp_path}/notes "
                                                   r"is a file, not a folder \(no output was changed\)$"):
        report.main(["-o", str(tmp_path / "notes/sub/report.md")])
    assert (tmp_path / "notes").read_text() == "mine"


def test_a_class_name_with_a_newline_or_a_bar_keeps_its_row_on_one_line() -> None:
    from classifier.experiments.table import per_class_table
    table = per_class_table({"test": {"two\nlines": {"f1": 0.5}, "a|b": {"f1": 0.7}}}, "test")
    assert table.splitlines()[2:] == ["| two lines | 0.5000 |", "| a\\|b | 0.7000 |"]


def test_seed_means_of_epochs_and_seconds_read_as_such() -> None:
    groups = aggregate_seeds([Experiment(f"s{i}", {"train.seed": i}, {"epoch": 40, "seconds": 284.8 + i})
                              for i in range(2)])
    assert seeds_table(groups, "epoch").splitlines()[2] == "| 2 | 40.0 ± 0.0 | 285.3 ± 0.7 |"


def test_a_table_of_very_different_experiments_fits_the_screen_with_every_metric() -> None:
    """After the README's digits recipes and the photo recipes, 20 params differ; `dvc exp show
    --only-changed` was 558 characters wide. On the screen: short keys and values, then the last
    param columns left out and named; the metrics always stay; -o's table keeps everything."""
    base = {"data.source": "data/digits", "split.given_val": "val", "prepare.image_size": 16,
            "prepare.normalize": "standard", "augment.blur_kernels": [3], "augment.online": False,
            "augment.online_crop_scale": 0.8, "augment.online_hflip": False, "model.name": "mlp",
            "model.batch_norm": False, "model.dropout": 0.0, "model.filters": [32, 64], "model.pool_after": [1, 2],
            "model.pretrained": "", "train.lr": 0.05, "train.epochs": 2, "train.features_lr_factor": 1,
            "train.batch_size": 128, "prepare.grayscale": True}
    photos = {"data.source": "/home/someone/datasets/hymenoptera_data", "split.given_val": "test",
              "prepare.image_size": 64, "prepare.grayscale": False, "augment.blur_kernels": [],
              "augment.online": True, "augment.online_crop_scale": 0.6, "augment.online_hflip": True,
              "train.batch_size": 32}
    scores = {"val_acc": 0.9512, "test_acc": 0.9388, "f1": 0.9301, "loss": 0.2113, "epoch": 12, "seconds": 24.4}
    rows = [Experiment("main", base, scores), Experiment("lr-small", {**base, "train.lr": 0.01}, scores),
            Experiment("blur-35", {**base, "augment.blur_kernels": [3, 5]}, scores),
            Experiment("lite0", {**base, **photos, "prepare.normalize": "auto", "model.name": "efficientnet_lite0",
                                 "model.pretrained": "efficientnet-lite0-57934424.pth", "train.epochs": 12,
                                 "train.features_lr_factor": 0.1}, scores),
            Experiment("scratch", {**base, **photos, "model.name": "cnn", "model.batch_norm": True, "model.dropout": 0.3,
                                   "model.filters": [32, 64, 128], "model.pool_after": [1, 2, 3], "train.epochs": 120},
                       scores)]
    whole = markdown_table(rows, "val_acc")
    assert max(map(len, whole.splitlines())) > 300
    shown = markdown_table(rows, "val_acc", width=160)
    lines = shown.splitlines()
    assert max(map(len, lines)) <= 160, shown
    header = lines[0].split(" | ")
    # What tells the runs apart first (the architecture, the data), then the tuning knobs.
    # Then whatever tells two runs apart that those do not: lr-small and blur-35 from main.
    assert header[:6] == ["| experiment", "state", "name", "source", "lr", "blur_kernels"], header
    assert header[-6:] == ["val_acc", "test_acc", "f1", "loss", "epoch", "seconds |"]
    assert "| efficientnet_li… | hymenoptera_data |" in shown
    note = " ".join(lines[lines.index(next(line for line in lines if line.startswith("("))):])
    assert "more changed param(s) left out to fit: " in note and note.endswith("-o FILE writes them all)")
    left_out = note.split(": ", 1)[1].split(";")[0].split(", ")
    assert len(header) - 8 + len(left_out) == len(differing_params(rows))
