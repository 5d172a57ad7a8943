"""The real pipeline through the real dvc, on a temporary git repo holding a copy of the project
with tiny params: what runs, what reruns after a param change, what DVC can show and diff."""
from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from classifier.data.artifacts import load_array_set
from classifier.runtime.errors import PipelineError
from classifier.data.shards import read_index
from tests.helpers import (ROOT, assert_picture, changed_stages, copy_of, dvc, env, most_advanced, read_params,
                           restore_baseline, run, set_params, stages_run, stop_queue_workers)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory, trained_template) -> Path:
    """A committed project after a first `dvc repro`."""
    return copy_of(trained_template, tmp_path_factory.mktemp("project"))


def exp_run(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return dvc("exp", "run", *args, cwd=root)
    finally:
        restore_baseline(root)


@pytest.fixture(scope="module")
def lr_experiment(project) -> subprocess.CompletedProcess:
    """The module's experiment: a smaller learning rate, and dropout (two changed params for `--only-changed`)."""
    return exp_run(project, "-n", "lr-small", "-S", "train.lr=0.01", "-S", "model.dropout=0.5")


def test_repro_writes_every_output(project) -> None:
    for path in ["data/raw/index.csv", "data/raw/shard-0000.bin", "data/split/classes.json", "data/prepared/stats.json",
                 "data/augmented/train/images.npy", "models/model.pt", "metrics/train.json",
                 "metrics/eval.json", "metrics/per_class.json", "metrics/summary.json", "metrics/time.json",
                 "plots/train/history.csv", "plots/eval/confusion_test.png", "plots/eval/learning_curves.png",
                 "plots/eval/weights.png", "plots/eval/first_layer.png", "plots/eval/feature_maps.png"]:
        assert (project / path).exists(), path
    assert len(read_index(project / "data/raw")) == 1797  # the images' bytes in shards: few files for DVC
    assert len(list((project / "data/raw").iterdir())) <= 4


def test_eval_metrics_have_the_expected_keys(project) -> None:
    scores = json.loads((project / "metrics/eval.json").read_text())
    assert set(scores) == {"train", "val", "test", "avoidable_bias", "variance", "health", "calibration"}
    for split in ("train", "val", "test"):
        assert set(scores[split]) - {"sampled_from", "sample_seed"} == {
            "accuracy", "top_k_accuracy", "loss", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
            "recall_weighted", "f1_weighted", "ece", "brier", "images"}
        assert 0.5 < scores[split]["accuracy"] <= scores[split]["top_k_accuracy"] <= 1.0  # a tiny MLP still learns
    # evaluate.train_sample: 1000 of the 1,259 train images, seeded and said; val and test whole
    assert (scores["train"]["images"], scores["train"]["sampled_from"], scores["train"]["sample_seed"]) == (1000, 1259, 0)
    test_rows = len(pd.read_csv(project / "data/split/test.csv"))
    assert "sampled_from" not in scores["val"] and scores["test"]["images"] == test_rows
    # The scores are those of the predictions evaluate wrote, row by row (not restated from their formulas).
    for split in ("val", "test"):
        predicted = pd.read_csv(project / f"plots/eval/{split}_predictions.csv", dtype=str)
        assert len(predicted) == len(pd.read_csv(project / f"data/split/{split}.csv"))
        assert scores[split]["accuracy"] == pytest.approx((predicted["actual"] == predicted["predicted"]).mean())
    # Bias and variance as docs/experiments.md defines them, against evaluate.target_accuracy (human-level error).
    target = read_params(project / "params.yaml")["evaluate"]["target_accuracy"]
    assert scores["avoidable_bias"] == pytest.approx(target - scores["train"]["accuracy"])
    assert scores["variance"] == pytest.approx(scores["train"]["accuracy"] - scores["val"]["accuracy"])
    assert set(scores["health"]) == {"collapse", "divergence", "loss_spikes", "overfitting", "underfitting",
                                     "still_improving"}
    per_class = json.loads((project / "metrics/per_class.json").read_text())
    assert set(per_class) == {"train", "val", "test"} and set(per_class["test"]) == {str(d) for d in range(10)}
    assert set(per_class["test"]["3"]) == {"accuracy", "precision", "recall", "f1", "support"}
    assert_picture(project / "plots/eval/worst_val.png")
    history = pd.read_csv(project / "plots/train/history.csv")
    assert history.columns.tolist() == ["epoch", "lr", "train_loss", "train_objective", "train_accuracy", "val_loss",
                                        "val_accuracy", "seconds", "phase"]
    assert history["epoch"].tolist() == list(range(1, 11)) and (history["seconds"] > 0).all()
    steps = pd.read_csv(project / "plots/train/steps.csv")
    assert steps.columns.tolist() == ["step", "epoch", "loss", "objective", "lr"] and steps["step"].is_monotonic_increasing
    train = json.loads((project / "metrics/train.json").read_text())
    assert set(train) == {"epochs", "saved_epoch", "best_epoch", "stopped_early", "pruned", "parameters",
                          "params_per_sample", "train_loss", "train_accuracy", "seconds", "images_per_second", "processes"}
    assert train["pruned"] is False  # not a tools.tune trial (test_tune.py prunes some)
    train_images = len(pd.read_csv(project / "data/augmented/train/index.csv"))
    best = int(history["val_loss"].idxmin()) + 1  # train.monitor: val_loss, the first of equal ones
    assert train["saved_epoch"] == 10 and train["best_epoch"] == best and train["params_per_sample"] == pytest.approx(
        train["parameters"] / train_images)
    assert train["seconds"] == pytest.approx(history["seconds"].sum()) and train["processes"] == 1
    # Throughput counts the training steps only: more than all epochs' images over all the time.
    assert train["images_per_second"] > 10 * train_images / train["seconds"]


def test_no_val_or_test_image_reaches_training(project) -> None:
    lists = {s: pd.read_csv(project / f"data/split/{s}.csv")["path"] for s in ("train", "val", "test")}
    assert not set(lists["train"]) & set(lists["val"]) and not set(lists["train"]) & set(lists["test"])
    assert not set(lists["val"]) & set(lists["test"])
    augmented = load_array_set(project / "data/augmented/train")
    sources = set(augmented.index["source"])
    assert sources == set(lists["train"])
    assert not sources & (set(lists["val"]) | set(lists["test"]))
    assert set(augmented.index["split"]) == {"train"}
    prepared = load_array_set(project / "data/prepared/train")
    n = len(prepared.labels)
    assert len(augmented.labels) == 2 * n  # the originals and one blur (blur_kernels: [3])
    originals = (augmented.index["augmentation"] == "original").to_numpy()
    np.testing.assert_array_equal(augmented.images[originals], prepared.images)  # byte for byte
    assert augmented.index["source"][originals].tolist() == prepared.index["source"].tolist()
    assert augmented.index["augmentation"].tolist() == ["original", "blur3"] * n
    np.testing.assert_array_equal(augmented.labels, np.repeat(prepared.labels, 2))


def test_lr_change_reruns_train_and_evaluate_only(project, lr_experiment) -> None:
    assert stages_run(lr_experiment) == ["params", "train", "audit", "evaluate"]  # params: the whole file checked first; audit (off) reads train's params
    # The run ends with one summary block: test accuracy, macro F1, the health verdict.
    block = re.search(r"^─+\ntest accuracy  (\S+)%.*\nmacro F1       (\S+)\nhealth         (.+)\n", lr_experiment.stdout, re.M)
    assert block, lr_experiment.stdout
    # The verdict names exactly the problems evaluate's health lines above it described.
    problems = re.findall(r"^health: ", lr_experiment.stdout, re.M)
    if problems:
        assert block.group(3).startswith(f"{len(problems)} problem{'s' if len(problems) > 1 else ''}: ")
        assert len(block.group(3).split(": ", 1)[1].split(" (")[0].split(", ")) == len(problems)
    else:
        assert block.group(3).startswith("healthy: no collapse")
    for skipped in ("ingest", "split", "prepare", "augment"):
        assert f"Stage '{skipped}' didn't change, skipping" in lr_experiment.stdout


EXP_SHOW_DROP = "--drop '^(data|models|stages|classifier)/|^params.yaml$|Created'"  # the hash and date columns


def test_exp_show_only_changed_fits_a_terminal_and_shows_the_changed_params(project, lr_experiment) -> None:
    # With the experiment applied, the workspace differs from main (another model.pt): its row has values too.
    try:
        dvc("exp", "apply", "lr-small", cwd=project)
        assert "--only-changed " + EXP_SHOW_DROP in (ROOT / "README.md").read_text()  # the README's first command
        plain = dvc("exp", "show", "--only-changed", cwd=project).stdout
        assert "models/model.pt" in plain  # the hash column the README's command drops
        shown = dvc("exp", "show", "--only-changed", *shlex.split(EXP_SHOW_DROP), cwd=project).stdout
    finally:
        restore_baseline(project)
    lines = [line.rstrip() for line in shown.splitlines()]
    assert max(map(len, lines)) <= 160, shown
    header = next(line for line in lines if "Experiment" in line).split()
    assert {"train.lr", "model.dropout", "test_acc", "val_acc"} <= set(header), header
    assert "train.epochs" not in header  # an unchanged param is left out
    assert not [column for column in header if column.startswith(("data/", "models/", "stages/", "classifier/", "params.yaml"))], header
    assert any("lr-small" in line for line in lines), shown
    workspace = [line.split() for line in lines if line.split()[:1] == ["workspace"]]
    assert workspace and workspace[0][header.index("model.dropout")] == "0.5", shown  # it differs from main


def test_a_code_edit_marks_only_the_stages_that_run_it(project) -> None:
    """tests/test_rerun_policy.py's table, asked of the real `dvc status` for a few files."""
    for file, expected in (("classifier/evaluation/scores.py", {"evaluate"}), ("stages/split.py", {"split"}),
                           ("classifier/augment/offline.py", {"augment"}), ("tools/lr_find.py", set())):
        path = project / file
        original = path.read_text()
        try:
            path.write_text(original + "\n# an edit\n")
            assert changed_stages(project) == expected, file
        finally:
            path.write_text(original)
    assert changed_stages(project) == set()


def test_a_label_fix_reruns_split_and_what_follows_never_ingest(project) -> None:
    """Issue 39: a fix in data/labels.csv (tools.relabel) marks split alone changed; split applies it and
    changes its output, so the stages after it are due, and ingest never (`dvc exp run` makes such a
    fix an ordinary experiment)."""
    key = read_index(project / "data/raw")["key"].iloc[0]   # a 0
    try:
        subprocess.run([sys.executable, "-m", "tools.relabel", key, "--to", "6", "--note", "a test"], cwd=project,
                       env=env(), check=True, capture_output=True)
        assert changed_stages(project) == {"split"}
        result = dvc("repro", "split", cwd=project)
        assert stages_run(result) == ["split"]
        assert "split: label fixes in data/labels.csv: 1 relabelled, 0 dropped" in result.stdout
        assert changed_stages(project) == {"prepare", "augment", "train", "audit", "evaluate"}   # never ingest
    finally:
        restore_baseline(project)


def test_augment_change_reruns_augment_then_train_and_evaluate(project) -> None:
    """DVC's own graph carries a changed output on to the stages after it; ours is what each stage declares
    and that augment's output really changes."""
    try:
        set_params(project, augment={"blur_kernels": [3, 5]})
        assert changed_stages(project) == {"params", "augment"}
        result = dvc("repro", "augment", cwd=project)
        assert stages_run(result) == ["params", "augment"]
        assert "augment: 1259 train images -> 3777 rows (original, blur3, blur5)" in result.stdout
        assert changed_stages(project) == {"train", "audit", "evaluate"}  # each reads the augmented train split
    finally:
        restore_baseline(project)


def test_a_bad_param_anywhere_stops_dvc_repro_before_any_stage_works(project) -> None:
    """The params stage runs first and checks the whole file; each stage then reads its own sections."""
    try:
        set_params(project, train={"lr": -0.1})
        result = dvc("repro", cwd=project, check=False)
        assert result.returncode != 0 and stages_run(result) == ["params"]
        assert "error: The 'train.lr' parameter must be a float > 0 and <= 100. Got -0.1 instead." in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        restore_baseline(project)


def test_online_augmentation_reruns_train_and_evaluate_not_augment(project) -> None:
    try:
        set_params(project, augment={"online": True})
        # then evaluate, as train's model changes; audit: it trains as train does (off, it writes {} at once)
        assert changed_stages(project) == {"params", "train", "audit"}
    finally:
        restore_baseline(project)


def test_exp_show_lists_params_and_accuracies(project, lr_experiment) -> None:
    table = dvc("exp", "show", "--csv", cwd=project).stdout
    header, *rows = csv.reader(table.strip().splitlines())
    metrics = ["test_acc", "val_acc", "f1", "loss", "ece", "seconds"]
    for column in (*metrics, "train.lr", "model.name"):
        assert column in header, column
    # The declared metrics are the handful that compare runs; the detail is in files dvc metrics show reads.
    shown = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    assert {file for row in shown for file in (row.get("data") or {}).get("metrics", {})} == {
        "metrics/summary.json", "metrics/time.json", "metrics/audit.json"}
    lr_small = next(row for row in rows if row[0] == "lr-small")
    assert lr_small[header.index("train.lr")] == "0.01"
    summary = json.loads((project / "metrics/summary.json").read_text())
    scores = json.loads((project / "metrics/eval.json").read_text())
    assert summary["test_acc"] == round(scores["test"]["accuracy"], 4) and summary["f1"] == round(scores["test"]["f1_macro"], 4)
    detail = dvc("metrics", "show", "metrics/eval.json", cwd=project).stdout
    assert "test.precision_weighted" in detail and "health.collapse" in detail


def test_plots_diff_renders_both_revisions(project, lr_experiment) -> None:
    result = dvc("plots", "diff", "HEAD", "lr-small", "--json", cwd=project)
    plots = json.loads(result.stdout)["data"]
    for name in ("Loss", "Accuracy", "Confusion matrix (test)", "Reliability (test)"):
        (plot,) = plots[name]
        assert plot["type"] == "vega" and plot["revisions"] == ["HEAD", "lr-small"], name
    out = project / "plots_html"
    dvc("plots", "diff", "HEAD", "lr-small", "-o", str(out), cwd=project)
    html = (out / "index.html").read_text()
    assert "HEAD" in html and "lr-small" in html
    # ... and links to evaluate's error page (issue 39), there beside it.
    assert 'href="../plots/eval/errors.html"' in html and (out.parent / "plots/eval/errors.html").is_file()
    # Renders offline: vega, vega-lite and vega-embed are in the page, and no script comes from elsewhere.
    assert not re.search(r"<script[^>]*\bsrc\s*=", html), "the plots page loads a script"
    assert re.search(r"<link[^>]*https?:", html) is None
    for library in ("vega", "vega-lite", "vega-embed"):  # inlined from .dvc/plots.html, whichever version
        assert re.search(rf"<script>/\* {library} \d+\.\d+\.\d+ \(npm\)", html), library
    assert html.count("vegaEmbed(") >= 9  # every interactive chart is drawn by the inlined vega-embed
    # Axis titles say what they are; the confusion matrices have actual on y, as the PNGs do.
    specs = {name: json.dumps(plots[name][0]["content"]) for name in ("Loss", "Confusion matrix (test)")}
    assert '"title": "cross-entropy loss"' in specs["Loss"]
    def axis_fields(spec) -> set[tuple[str, str]]:
        """(channel, field) of every x and y encoding anywhere in a vega-lite spec."""
        if isinstance(spec, list):
            return set().union(*map(axis_fields, spec)) if spec else set()
        if not isinstance(spec, dict):
            return set()
        found = {(c, e["field"]) for c, e in (spec.get("encoding") or {}).items() if c in "xy" and "field" in e}
        return found.union(*map(axis_fields, spec.values()))
    assert {("x", "predicted"), ("y", "actual")} <= axis_fields(plots["Confusion matrix (test)"][0]["content"])
    for name in ("Loss", "Accuracy", "Learning rate"):  # whole epochs on the x axis, no 1.2, 1.4 ticks
        assert '"x": {"field": "epoch", "type": "quantitative", "title": "epoch", "axis": {"tickMinStep": 1, ' \
               '"format": "d"}}' in json.dumps(plots[name][0]["content"]), name


def test_metrics_diff_against_the_last_commit(project, lr_experiment) -> None:
    diff = json.loads(dvc("metrics", "diff", "HEAD", "lr-small", "--json", cwd=project).stdout)
    assert set(diff["metrics/summary.json"]) >= {"test_acc", "val_acc", "f1", "loss"}


def test_train_repeats_to_the_last_digit_on_the_cpu(project) -> None:
    def results() -> dict:
        """Everything train writes, less the wall times."""
        timed = ("seconds", "images_per_second")
        metrics = {k: v for k, v in json.loads((project / "metrics/train.json").read_text()).items() if k not in timed}
        return {"model": (project / "models/model.pt").read_bytes(), "metrics": metrics,
                "steps": (project / "plots/train/steps.csv").read_bytes(),
                "history": pd.read_csv(project / "plots/train/history.csv").drop(columns="seconds").to_csv()}
    before = results()
    try:
        run([sys.executable, "-m", "stages.train"], project)  # the stage's own command, again
        after = results()
        for name, content in before.items():
            assert after[name] == content, name
    finally:
        restore_baseline(project)


def test_report_tables_both_experiments(project, lr_experiment, tmp_path) -> None:
    out = tmp_path / "report.md"
    result = run([sys.executable, "-m", "tools.report", "--output", str(out)], project)
    table = out.read_text()  # the whole table; the screen's is fitted to 160 columns, the same rows
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    shown = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in shown] == [line.split(" | ")[0] for line in table.splitlines()
                                                        if line.startswith("| ")]
    assert max(map(len, result.stdout.splitlines())) <= 160
    baseline = run(["git", "branch", "--show-current"], project).stdout.strip()
    assert "lr-small" in rows and baseline in rows
    assert "train.lr" in table.splitlines()[0] and "| 0.01 |" in rows["lr-small"]


def test_predict_agrees_with_evaluate_on_val_images(project) -> None:
    val = pd.read_csv(project / "data/split/val.csv", dtype=str)
    predicted = pd.read_csv(project / "plots/eval/val_predictions.csv", dtype=str)["predicted"]
    files = val["path"].tolist()[:5]
    result = run([sys.executable, "-m", "tools.predict", *files, "--json", "--top-k", "2"], project)
    assert result.stderr.startswith("predict: 5 image(s) read; classifying with models/model.pt (mlp, 10 classes)")
    answers = json.loads(result.stdout)
    assert [a["image"] for a in answers] == files
    assert [a["predictions"][0]["class"] for a in answers] == predicted.tolist()[:5]
    for answer in answers:
        probabilities = [p["probability"] for p in answer["predictions"]]
        assert len(probabilities) == 2 and probabilities[0] >= probabilities[1] and sum(probabilities) <= 1 + 1e-6
    (project / "broken.png").write_bytes(b"not a png")
    failed = run([sys.executable, "-m", "tools.predict", files[0], "broken.png"], project, check=False)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.strip() == "error: broken.png: not a readable image (corrupt or not PNG/JPEG/BMP/WebP/TIFF/GIF)"


def test_the_exported_program_gives_the_checkpoints_logits_on_the_test_split(project, tmp_path) -> None:
    """python -m tools.export on the pipeline's model: the checkpoint's logits for any batch size,
    without this project's model code; its class names and preprocessing travel inside."""
    from tools.export import export_checkpoint, load_exported
    from classifier.models.checkpoint import Checkpoint
    from classifier.training.device_dataset import DeviceDataset
    from classifier.models.inference import predict_logits
    checkpoint = Checkpoint.load(project / "models/model.pt")
    export_checkpoint(checkpoint, tmp_path / "served.pt2")
    program, classes, preprocessing = load_exported(tmp_path / "served.pt2")
    test = load_array_set(project / "data/prepared/test")
    data = DeviceDataset(test.images, test.labels, torch.device("cpu"))
    expected = predict_logits(checkpoint.build_model(torch.device("cpu")), data, checkpoint.preprocessing.normalizer())
    images = torch.from_numpy(test.images.copy()).permute(0, 3, 1, 2).contiguous()  # uint8 N×C×H×W, as prepared
    with torch.no_grad():
        got, one = program(images), program(images[:1])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    torch.testing.assert_close(one, expected[:1], rtol=1e-5, atol=1e-5)  # any batch size
    assert classes == checkpoint.classes and preprocessing == checkpoint.preprocessing.to_dict()


def test_a_queued_experiment_shows_its_own_progress_while_it_trains(project) -> None:
    """Runs before the module's other queues (file order), so that its own queue worker, with one
    thread, trains it. While it trains: its own live epochs in `dvc exp show`, epoch lines in `dvc queue logs`, and never
    the baseline's test accuracy in its row or in tools.report; PYTHONUNBUFFERED unset, as for a user.

    In its first seconds DVC sets up the experiment's workspace from its baseline commit, and shows that
    commit's files as the row (docs/experiments.md: "While a queue runs"); from its first epoch on, the row is its own."""
    # One thread for training (train.cpu_threads=1 below), one core left for polling: two busy processes on
    # two threads each crawl.
    quiet = {**{k: v for k, v in env().items() if k != "PYTHONUNBUFFERED"}, "OMP_NUM_THREADS": "1"}

    def call(*args: str) -> str:
        failures = []
        for _ in range(4):
            try:
                return subprocess.run([sys.executable, *args], cwd=project, env=quiet, capture_output=True, text=True,
                                      check=True, timeout=45).stdout
            except subprocess.TimeoutExpired:
                # DVC 3.67 can hang for good when an experiment's folder is removed while `dvc exp show`
                # reads it (it finished in between): ask again. An answer takes seconds (under make test's
                # two workers at most about 10): 45 s is a hang, and a hang cost the suite 2 minutes at 120.
                failures.append("timed out")
            except subprocess.CalledProcessError as exc:
                # ... or fail outright (seen at a load of 8 on 2 cores): ask again, and say why if it persists.
                failures.append(" ".join((exc.stderr or "").split())[-300:])
        raise AssertionError(f"{' '.join(args)} failed 4 times: {failures}")
    baseline = json.loads((project / "metrics/summary.json").read_text())["test_acc"]
    epochs = 20  # a quarter to half a second each: several polls of `dvc exp show` fit in
    call("-m", "dvc", "exp", "run", "--queue", "-n", "live", "-S", f"train.epochs={epochs}", "-S", "train.batch_size=16",
         "-S", "model.hidden=[512,512]", "-S", "train.lr=0.01", "-S", "train.cpu_threads=1")
    try:
        # The worker it starts keeps running: no pipes to wait on.
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start"], cwd=project, env=quiet, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # `dvc exp show` costs seconds of CPU a call, taken from the other tests: it is asked from the
        # moment the experiment's train starts writing its epochs (in its temporary copy of the project),
        # not through DVC's set-up before it.
        deadline = time.monotonic() + 600
        while not any(live_epoch(path) for path in project.glob(".dvc/tmp/exps/tmp*/metrics/time.json")):
            assert time.monotonic() < deadline, "the queued experiment's train did not start in 10 minutes"
            time.sleep(0.2)
        epochs_seen, polls, side_checks = set(), [], {}
        deadline = time.monotonic() + 900
        while True:
            assert time.monotonic() < deadline, f"the queued experiment did not finish in 15 minutes: {polls}"
            rows = list(csv.DictReader(call("-m", "dvc", "exp", "show", "--csv").splitlines()))
            row = most_advanced([r for r in rows if r["Experiment"] == "live"])
            polls.append((row["State"], row.get("epoch"), row.get("seconds"), row.get("test_acc")))
            if row["State"] == "Success":
                break
            if row["State"] != "Running":
                time.sleep(0.5)
                continue
            if len(epochs_seen) >= 2:
                # Seen moving: sparser polls from here (each costs seconds of CPU, taken from the run and
                # the other worker's tests), still often enough to catch the baseline's scores in its row.
                time.sleep(1.5)
            if row["test_acc"] not in ("", "!"):
                if row["epoch"] == str(epochs):
                    continue  # trained: its own scores, evaluate has run
                # The baseline's files, as DVC copied them: only before training starts (DVC's set-up, then
                # the second it takes the train stage to start and remove them), never once it trains.
                assert row["test_acc"] == str(baseline) and not epochs_seen, polls
                continue
            if row["epoch"] not in ("", "!") and int(row["epoch"]) < epochs:
                epochs_seen.add(int(row["epoch"]))
                if not side_checks:  # from its first epoch, beside the polls: the log and the report, mid-run
                    side_checks = {name: subprocess.Popen([sys.executable, *args], cwd=project, env=quiet, text=True,
                                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                                   for name, args in (("logs", ("-m", "dvc", "queue", "logs", "live")),
                                                      ("report", ("-m", "tools.report")))}
        assert len(epochs_seen) >= 2, repr(polls)  # it moved while it trained
        logs, table = (side_checks[name].communicate(timeout=300)[0] for name in ("logs", "report"))
        assert 0 < len(re.findall(rf"^epoch +\d+/{epochs}", logs, re.M)) < epochs, logs
        (line,) = [line for line in table.splitlines() if line.startswith("| live |")]
        assert line.startswith("| live | running |") and f"{baseline:.4f}" not in line, table
        finished = experiment_data(project, "live")["data"]["metrics"]
        assert finished["metrics/time.json"]["data"]["epoch"] == epochs and "metrics/summary.json" in finished
    finally:
        stop_queue_workers(project)  # whatever happened: an idle worker would run the next test's queue


def live_epoch(path: Path) -> int:
    """The epoch a running train has published in metrics/time.json (its last write adds `pruned`), or 0."""
    try:
        progress = json.loads(path.read_text())
    except (OSError, ValueError):  # being replaced, or its folder removed
        return 0
    return 0 if "pruned" in progress else progress.get("epoch", 0)


def test_the_seed_recipe_queues_one_experiment_a_seed(project) -> None:
    """docs/experiments.md "Grid search and seeds": `-S 'train.seed=range(0,2)'` queues seeds 0 and 1 with the params otherwise as
    committed. A queued run running is the live test's; the seed report's arithmetic (the committed
    run, equal to seed 0, counted once) is test_report.py's."""
    recipe = "dvc exp run --queue -S 'train.seed=range(0,20)'"
    assert recipe in (ROOT / "docs/experiments.md").read_text()
    committed = read_params(project / "params.yaml")
    try:
        dvc("exp", "run", "--queue", "-S", "train.seed=range(0,2)", cwd=project)
        shown = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
        queued = [r["data"]["params"]["params.yaml"]["data"] for row in shown for e in row.get("experiments") or []
                  for r in e["revs"] if (e.get("executor") or {}).get("state") == "queued"]
    finally:
        dvc("queue", "remove", "--queued", cwd=project)
    assert sorted(params["train"]["seed"] for params in queued) == [0, 1]
    for params in queued:
        assert {**params, "train": {**params["train"], "seed": committed["train"]["seed"]}} == committed


def experiment_data(root: Path, name: str) -> dict:
    """An experiment's params and metrics from `dvc exp show --json`."""
    shown = json.loads(dvc("exp", "show", "--json", cwd=root).stdout)
    (found,) = [r for row in shown for e in row.get("experiments") or [] for r in e["revs"] if r.get("name") == name]
    return found


def test_lr_find_suggests_a_learning_rate_and_refuses_a_range_where_nothing_is_learnt(project) -> None:
    """The suggestion's accuracy (98% and more on digits) is measured by `python -m benchmarks.lr_find`."""
    from tools import lr_find
    with pytest.MonkeyPatch.context() as patch, pytest.raises(PipelineError, match="^the loss never decreased.*lower --start"):
        patch.chdir(project)  # in this process: the command line's path runs below
        lr_find.main(["--start", "100", "--end", "1000"])
    result = run([sys.executable, "-m", "tools.lr_find"], project)
    assert "lr_find: step 20/200: lr " in result.stdout  # progress while it runs, every tenth of the steps
    suggestion = float(re.search(r"suggested train.lr ([0-9.e+-]+)", result.stdout).group(1))
    assert f"dvc exp run -S train.lr={suggestion:.3g}" in result.stdout
    table = pd.read_csv(project / "plots/lr_find/lr_find.csv")
    assert table.columns.tolist() == ["lr", "loss", "smoothed_loss"] and table["lr"].is_monotonic_increasing
    assert table["lr"].iloc[0] == pytest.approx(1e-6) and table["smoothed_loss"].min() < table["smoothed_loss"].iloc[0] / 3
    assert_picture(project / "plots/lr_find/lr_find.png", min_side=300)
    assert "lr_find" not in run(["git", "status", "--porcelain"], project).stdout  # a tool's output, not the repo's
    lowest = float(table["lr"].iloc[int(table["smoothed_loss"].idxmin())])
    assert suggestion == pytest.approx(lowest / 3, rel=1e-2)  # a third of the lowest smoothed loss's rate


def test_search_names_count_past_every_experiment_name_in_use(project, lr_experiment) -> None:
    """tools.tune names its trials STUDY-K past every name DVC knows: a finished experiment's (lr_experiment's
    lr-small) and a queued one's alike, so no result is lost to a reused name (free_names: unit-tested)."""
    from classifier.experiments.dvc_client import taken_names
    try:
        dvc("exp", "run", "--queue", "-n", "rs-1", "-S", "train.lr=0.02", cwd=project)
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(project)
            assert {"lr-small", "rs-1"} <= taken_names()
    finally:
        dvc("queue", "remove", "--queued", cwd=project)
