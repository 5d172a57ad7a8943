"""Tables of experiments, the way the experiment logs tabled their runs: rows from `dvc exp show
--json` (state, the params that differ, the key metrics), fitted to a screen's width; seeds
aggregated; a workspace's per-class scores. tools.report prints them; tools.cluster its landed runs.
"""
from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np

from classifier.runtime import paths
from classifier.experiments.dvc_client import run_dvc
from classifier.runtime.errors import PipelineError

SEED_KEYS = ("train.seed", "split.seed", "augment.seed")
SUMMARY_FILE = paths.SUMMARY_METRICS.as_posix()  # evaluate's scores, as `dvc exp show` names the file
PER_CLASS_FILE = paths.PER_CLASS_METRICS
METRICS = ("val_acc", "test_acc", "f1", "loss", "epoch", "seconds")  # the declared metrics: summary.json, time.json


@dataclass(frozen=True)
class Experiment:
    name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    state: str = "done"  # done, running, queued or failed (DVC's executor state; success is done); tools.report: stale


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
