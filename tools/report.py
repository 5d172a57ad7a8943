"""A markdown table of experiments, the way the experiment logs tabled their runs.

    python -m tools.report [-o report.md] [--sort-by val_acc] [--seeds]
    python -m tools.report --per-class [--split test]     # this workspace's per-class scores
    python -m tools.report --study NAME                   # a tools.tune study: trials ranked, pictures

Reads `dvc exp show --json`: one row per commit and experiment, its state (done, running, queued,
failed), the params that differ between them, and the key metrics, sorted best first. A running
experiment shows only its own live numbers (epochs done, seconds: its scores come when evaluate
has run); a queued or failed one shows none, since its workspace may still hold its baseline's.
With --seeds, runs that differ only in their seeds
(train.seed, split.seed, augment.seed) are one row: the mean ± sample standard deviation of each
metric over them, and how many distinct runs there were (the same params twice are one run). A sweep over seeds and a grid:

    dvc exp run --queue -S 'train.seed=range(0,20)' -S 'train.lr=0.01,0.02' && dvc queue start -j 2
    python -m tools.report --seeds
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.runtime import paths
from classifier.runtime.dvc_client import run_dvc
from classifier.runtime.errors import PipelineError, printable, run_stage
from classifier.runtime.outputs import atomic_file

SEED_KEYS = ("train.seed", "split.seed", "augment.seed")
SUMMARY_FILE = paths.SUMMARY_METRICS.as_posix()  # evaluate's scores, as `dvc exp show` names the file
PER_CLASS_FILE = paths.PER_CLASS_METRICS
DEFAULT_WIDTH = 160  # a line of the table on stdout when it is no terminal
METRICS = ("val_acc", "test_acc", "f1", "loss", "epoch", "seconds")  # the declared metrics: summary.json, time.json


@dataclass(frozen=True)
class Experiment:
    name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    state: str = "done"  # done, running, queued or failed (DVC's executor state; success is done)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _experiment(name: str, data: dict, state: str = "done", baseline: Experiment | None = None) -> Experiment:
    params = {}
    for file in (data.get("params") or {}).values():
        params.update(flatten(file.get("data") or {}))
    metrics = {}
    for path, file in (data.get("metrics") or {}).items():
        # A queued or failed workspace may hold its baseline's files; a running one's scores come when
        # it is done (until its train stage starts, summary.json is the baseline's): its progress only.
        if state == "done" or (state == "running" and path != SUMMARY_FILE):
            metrics.update({k: v for k, v in flatten(file.get("data") or {}).items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if state == "running" and baseline is not None and metrics and all(
            baseline.metrics.get(k) == v for k, v in metrics.items()):
        metrics = {}  # DVC is still setting its workspace up from the baseline commit: these are the baseline's
    return Experiment(name, params, metrics, state)


def _state(experiment: dict) -> str:
    state = (experiment.get("executor") or {}).get("state") or "success"
    return "done" if state == "success" else state


def experiments_from_json(rows: list[dict]) -> list[Experiment]:
    """Commits and their experiments from `dvc exp show --json`; the workspace only when it holds
    results that no commit has."""
    found: list[Experiment] = []
    workspace = None
    for row in rows:
        if row.get("data") is None:
            continue
        if row["rev"] == "workspace":
            workspace = _experiment("workspace", row["data"])
            continue
        base = _experiment(row.get("name") or row["rev"][:7], row["data"])
        found.append(base)
        for experiment in row.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if rev.get("data"):
                    found.append(_experiment(rev.get("name") or experiment.get("name") or rev["rev"][:7], rev["data"],
                                             _state(experiment), base))
    if workspace is not None and all((e.params, e.metrics) != (workspace.params, workspace.metrics) for e in found):
        found.insert(0, workspace)
    return found


def differing_params(experiments: list[Experiment]) -> list[str]:
    keys = sorted({k for e in experiments for k in e.params})
    return [k for k in keys if len({json.dumps(e.params.get(k), sort_keys=True) for e in experiments}) > 1]


def _param(value: Any) -> str:
    """A param as written in params.yaml."""
    return "-" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


DECIMALS = {"epoch": 1, "seconds": 1}  # the others are scores and losses: 4


def _number(value: float, name: str) -> str:
    return f"{value:.{DECIMALS.get(name, 4)}f}"


def _metric(value: Any, name: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and name == "epoch" and value.is_integer():
        return str(int(value))
    return _number(value, name) if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    """A table cell on one line whatever it holds (a class name with a newline or a |)."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the header, the rule, a line per row."""
    lines = ["| " + " | ".join(_cell(c) for c in cells) + " |" for cells in (header, *rows)]
    return "\n".join([lines[0], "|" + "---|" * len(header), *lines[1:]]) + "\n"


def _sort_key(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not math.isnan(value) else -math.inf


MAX_CELL = 16  # characters of a param's value when the table must shrink to fit


def _line_width(header: list[str], rows: list[list[str]]) -> int:
    return max(len("| " + " | ".join(_cell(c) for c in cells) + " |") for cells in (header, *rows))


def _short_keys(keys: list[str]) -> list[str]:
    """Each param key by its last part (train.lr -> lr), or whole where two would read alike."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return [short if last.count(short) == 1 else key for key, short in zip(keys, last)]


def _short_value(text: str) -> str:
    if "/" in text and not text.startswith("["):
        text = text.rstrip("/").rsplit("/", 1)[-1]  # a folder or file: its name
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


FIRST_KEYS = ("model.name", "data.source")  # what tells the runs apart at a glance
SECTION_ORDER = ("train", "model", "augment", "prepare", "split", "data", "evaluate")  # then the tuning knobs


def _priority(key: str) -> tuple[int, int, str]:
    section = key.split(".", 1)[0]
    return (FIRST_KEYS.index(key) if key in FIRST_KEYS else len(FIRST_KEYS),
            SECTION_ORDER.index(section) if section in SECTION_ORDER else len(SECTION_ORDER), key)


def _telling_first(columns: list[int], rows: list[list[str]], fixed: int) -> list[int]:
    """`columns` (the first `fixed` of them staying first) with those that tell two rows apart that
    the earlier ones do not moved forward, in their order: what is left out first is what no two
    rows need to be told apart."""
    told: set[tuple[int, int]] = set()
    telling, rest = [], []
    for k, column in enumerate(columns):
        new = {(a, b) for a in range(len(rows)) for b in range(a + 1, len(rows))
               if rows[a][column] != rows[b][column]} - told
        (telling if new or k < fixed else rest).append(column)
        told |= new
    return telling + rest


def fit(header: list[str], rows: list[list[str]], params: slice, width: int | None) -> tuple[str, list[str]]:
    """The markdown table in at most `width` characters a line: when it is wider, the param columns
    (`params` of the columns) get short names and values and go in order of use (model.name and
    data.source, then train's, model's, augment's, ... keys, those that tell runs apart first), and
    the last of them are left out; the keys left out are returned. The name columns and the metrics
    always stay."""
    if width is None or _line_width(header, rows) <= width:
        return markdown(header, rows), []
    order = sorted(range(params.start, params.stop), key=lambda i: _priority(header[i]))
    order = _telling_first(order, rows, sum(header[i] in FIRST_KEYS for i in order))
    keys = [header[i] for i in order]
    header = header[:params.start] + _short_keys(keys) + header[params.stop:]
    rows = [r[:params.start] + [_short_value(r[i]) for i in order] + r[params.stop:] for r in rows]
    dropped: list[str] = []
    while keys and _line_width(header, rows) > width:
        last = params.start + len(keys) - 1
        dropped.insert(0, keys.pop())
        header, rows = header[:last] + header[last + 1:], [r[:last] + r[last + 1:] for r in rows]
    return markdown(header, rows), dropped


def markdown_table(experiments: list[Experiment], sort_by: str, metrics: tuple[str, ...] = METRICS,
                   width: int | None = None) -> str:
    """One row per experiment: the params that differ between them, then the metrics; in `width`
    characters a line when given (fit)."""
    params = differing_params(experiments)
    metrics = tuple(m for m in metrics if any(m in e.metrics for e in experiments))
    ordered = sorted(experiments, key=lambda e: _sort_key(e.metrics.get(sort_by)), reverse=True)
    table, dropped = fit(["experiment", "state", *params, *metrics],
                         [[e.name, e.state, *(_param(e.params.get(p)) for p in params),
                           *(_metric(e.metrics.get(m), m) for m in metrics)] for e in ordered],
                         slice(2, 2 + len(params)), width)
    return table + _left_out(dropped, width)


def _left_out(keys: list[str], width: int | None) -> str:
    if not keys:
        return ""
    note = f"({len(keys)} more changed param(s) left out to fit: {', '.join(keys)}; -o FILE writes them all)"
    return "\n".join(textwrap.wrap(note, width or len(note))) + "\n"


@dataclass(frozen=True)
class SeedGroup:
    params: dict[str, Any]       # the params the runs share (seeds left out)
    runs: list[str]
    mean: dict[str, float]
    std: dict[str, float]        # sample standard deviation (n - 1); 0 for a single run


def aggregate_seeds(experiments: list[Experiment], metrics: tuple[str, ...] = METRICS) -> list[SeedGroup]:
    """Group runs whose params differ only in SEED_KEYS; mean and std of each metric per group.

    Runs with the same params, seeds included, are one run (a queued seed that equals the
    workspace's, a commit and the experiment it came from): the first is counted, once."""
    groups: dict[str, dict[str, Experiment]] = {}
    for e in experiments:
        shared = {k: v for k, v in e.params.items() if k not in SEED_KEYS}
        seeds = json.dumps([e.params.get(k) for k in SEED_KEYS])
        groups.setdefault(json.dumps(shared, sort_keys=True), {}).setdefault(seeds, e)
    result = []
    for key, runs in groups.items():
        members = list(runs.values())
        mean, std = {}, {}
        for metric in metrics:
            values = np.array([m.metrics[metric] for m in members if metric in m.metrics], dtype=float)
            if len(values):
                mean[metric] = float(values.mean())
                std[metric] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        result.append(SeedGroup(json.loads(key), [m.name for m in members], mean, std))
    return result


def seeds_table(groups: list[SeedGroup], sort_by: str, metrics: tuple[str, ...] = METRICS,
                width: int | None = None) -> str:
    as_experiments = [Experiment(", ".join(g.runs), g.params, g.mean) for g in groups]
    params = differing_params(as_experiments)
    metrics = tuple(m for m in metrics if any(m in g.mean for g in groups))
    table, dropped = fit(["runs", *params, *(f"{m} (mean ± std)" for m in metrics)],
                         [[str(len(g.runs)), *(_param(g.params.get(p)) for p in params),
                           *(f"{_number(g.mean[m], m)} ± {_number(g.std[m], m)}" if m in g.mean else "-"
                             for m in metrics)]
                          for g in sorted(groups, key=lambda g: _sort_key(g.mean.get(sort_by)), reverse=True)],
                         slice(1, 1 + len(params)), width)
    return table + _left_out(dropped, width)


PER_CLASS_COLUMNS = ("accuracy", "precision", "recall", "f1", "support")


def per_class_table(per_class: dict, split: str) -> str:
    """metrics/per_class.json's scores of one split as a markdown table, a row per class, worst F1 first."""
    if split not in per_class:
        raise PipelineError(f"{PER_CLASS_FILE} has no split '{split}'; splits: {', '.join(per_class)}")
    rows = sorted(per_class[split].items(), key=lambda item: (item[1].get("f1", 0.0), item[0]))
    columns = [c for c in PER_CLASS_COLUMNS if any(c in scores for _, scores in rows)]
    return markdown(["class", *columns], [[name, *(_metric(scores.get(c)) for c in columns)] for name, scores in rows])


EXP_SHOW_TIMEOUT = 300  # seconds: DVC 3.67 can hang for good when an experiment's folder goes while it reads it


def dvc_experiments() -> list[dict]:
    return json.loads(run_dvc("exp", "show", "--json", timeout=EXP_SHOW_TIMEOUT,
                              why_slow=" (it can hang when a queued experiment finishes while it reads it)"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.report", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--sort-by", default="val_acc", help="metric of metrics/summary.json to sort by, best first (default: %(default)s)")
    parser.add_argument("--seeds", action="store_true", help="one row per params, mean ± std over the seeds")
    parser.add_argument("--per-class", action="store_true",
                        help=f"instead: {PER_CLASS_FILE} of this workspace as a table, worst F1 first")
    parser.add_argument("--study", help="instead: the tools.tune study NAME, its trials ranked, the best one's "
                                        "command, and pictures in plots/tune/NAME (tools/study_report.py)")
    parser.add_argument("--split", default="test", help="with --per-class: train, val or test (default: %(default)s)")
    parser.add_argument("--width", type=int, default=None,
                        help="characters a line on the screen (default: the terminal's, 160 when not a terminal); "
                             "-o FILE always gets the whole table")
    return parser


def check_output(output: Path | None) -> None:
    """-o names a file to write: refused in one line before any work when it is a folder."""
    if output is not None and (output.is_dir() or str(output).endswith(("/", os.sep))):
        raise PipelineError(f"-o {printable(output)}: is a folder; give a file, e.g. -o {printable(output / 'report.md')}")


def check_sort_by(sort_by: str, experiments: list[Experiment]) -> None:
    known = sorted({m for e in experiments for m in e.metrics})
    if known and sort_by not in known:
        raise PipelineError(f"--sort-by {sort_by}: no experiment has that metric; metrics: {', '.join(known)}")


def write_table(table: str, output: Path | None, shown: str | None = None) -> None:
    """`shown` (the table fitted to the screen) on stdout, the whole `table` in `output`."""
    print(table if shown is None else shown, end="")
    if output is not None:
        with atomic_file(output) as tmp:  # its folder made; a full disk or no permission is one line
            tmp.write_text(table)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_output(args.output)
    if args.study:
        from tools.study_report import report
        write_table(report(args.study), args.output)
        return
    if args.per_class:
        if not PER_CLASS_FILE.is_file():
            raise PipelineError(f"{PER_CLASS_FILE} not found: it is made by the evaluate stage; run `dvc repro` first")
        write_table(per_class_table(json.loads(PER_CLASS_FILE.read_text()), args.split), args.output)
        return
    experiments = experiments_from_json(dvc_experiments())
    if not experiments:
        raise PipelineError("no experiments with results: run `dvc repro` or `dvc exp run` first")
    check_sort_by(args.sort_by, experiments)
    done = [e for e in experiments if e.state == "done"]  # seed means of finished runs only
    width = args.width or shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    if args.seeds:
        groups = aggregate_seeds(done)
        write_table(seeds_table(groups, args.sort_by), args.output, seeds_table(groups, args.sort_by, width=width))
    else:
        write_table(markdown_table(experiments, args.sort_by), args.output,
                    markdown_table(experiments, args.sort_by, width=width))


if __name__ == "__main__":
    run_stage(main)
