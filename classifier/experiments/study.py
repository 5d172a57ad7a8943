"""What a tools.tune study learnt (`python -m tools.report --study NAME`): its trials ranked, the
best params as the command that runs them again, and two pictures with their data.

In plots/tune/STUDY/ (git-ignored, like the journal they come from):
- history.png and history.csv: each trial's objective and the best so far, against the trial number
  (`dvc plots show plots/tune/STUDY/history.csv -x trial -y best` draws it too);
- params.png and params.csv: each searched param against the objective, one panel each.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifier.experiments.table import markdown
from classifier.runtime.errors import PipelineError
from classifier.runtime.outputs import atomic_file
from classifier.evaluation.plotting import pyplot
from classifier.training.tuning import OBJECTIVES, StudySettings, load_study

STATE_ORDER = {"complete": 0, "pruned": 1, "running": 2, "failed": 3, "waiting": 4}
STATE_COLOURS = {"complete": "tab:blue", "pruned": "tab:orange", "failed": "tab:red", "running": "tab:grey"}


@dataclass(frozen=True)
class TrialRow:
    number: int
    experiment: str
    state: str               # complete, pruned, running, failed (Optuna's state, lower case)
    value: float | None      # complete: the objective; pruned: its last reported value
    epochs: int              # epochs reported
    overrides: tuple[str, ...]  # KEY=VALUE as queued
    params: dict[str, Any]   # the sampler's view: KEY -> value


def load(study: str) -> tuple[list[TrialRow], StudySettings]:
    """The study's trials from its journal, and its settings; a one-line error when there is none."""
    loaded, settings, _ = load_study(study, names=("--study {study}", "python -m tools.tune --study {study} makes it"))
    rows = []
    for trial in loaded.get_trials(deepcopy=False):
        reported = trial.intermediate_values
        last = reported[max(reported)] if reported else None
        value = trial.value if trial.value is not None else last
        state = {"FAIL": "failed"}.get(trial.state.name, trial.state.name.lower())
        rows.append(TrialRow(trial.number, trial.user_attrs.get("experiment", ""), state,
                             value, len(reported), tuple(trial.user_attrs.get("overrides", ())), dict(trial.params)))
    return rows, settings


def ranked(rows: list[TrialRow], settings: StudySettings) -> list[TrialRow]:
    """Complete trials best first, then pruned ones (by their last value), running and failed."""
    sign = 1 if OBJECTIVES[settings.objective] == "minimize" else -1

    def key(row: TrialRow) -> tuple:
        value = row.value if row.value is not None and math.isfinite(row.value) else math.inf * sign
        return STATE_ORDER.get(row.state, 9), sign * value, row.number
    return sorted(rows, key=key)


def reproduce_line(row: TrialRow) -> str:
    """The trial's params as a plain run (outside the study: never pruned)."""
    return "dvc exp run " + " ".join(f"-S '{o}'" for o in row.overrides)


def table(rows: list[TrialRow], settings: StudySettings) -> str:
    header = ["rank", "experiment", "trial", "state", settings.objective, "epochs", "params"]
    body = [[str(i), row.experiment, str(row.number), row.state,
             f"{row.value:.4g}" if row.value is not None else "", str(row.epochs), " ".join(row.overrides)]
            for i, row in enumerate(ranked(rows, settings), 1)]
    return markdown(header, body)


def best_so_far(rows: list[TrialRow], settings: StudySettings) -> list[float | None]:
    """The best complete objective up to each trial (by number)."""
    better = min if OBJECTIVES[settings.objective] == "minimize" else max
    best, out = None, []
    for row in sorted(rows, key=lambda r: r.number):
        if row.state == "complete" and row.value is not None:
            best = row.value if best is None else better(best, row.value)
        out.append(best)
    return out


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def draw_history(rows: list[TrialRow], settings: StudySettings, folder: Path, study: str) -> None:
    """history.png and .csv: every trial's objective by state, and the best so far."""
    ordered = sorted(rows, key=lambda r: r.number)
    best = best_so_far(rows, settings)
    write_csv(folder / "history.csv", ["trial", "value", "best", "state"],
              [[r.number, "" if r.value is None else r.value, "" if b is None else b, r.state]
               for r, b in zip(ordered, best)])
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for state, colour in STATE_COLOURS.items():
        points = [(r.number, r.value) for r in ordered if r.state == state and r.value is not None]
        if points:
            axes.scatter(*zip(*points), c=colour, label=state, s=28, zorder=3)
    steps = [(r.number, b) for r, b in zip(ordered, best) if b is not None]
    if steps:
        axes.step(*zip(*steps), where="post", c="black", lw=1.2, label="best so far")
    axes.set(xlabel="trial", ylabel=f"{settings.objective} (val)", title=f"study {study}: {settings.objective} by trial")
    if settings.objective == "val_loss" and all(r.value is None or r.value > 0 for r in ordered):
        axes.set_yscale("log")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    save(figure, folder / "history.png")


def draw_params(rows: list[TrialRow], settings: StudySettings, folder: Path, study: str) -> None:
    """params.png and .csv: each searched param against the objective (a panel each)."""
    keys = sorted({k for r in rows for k in r.params})
    shown = [r for r in rows if r.value is not None]
    write_csv(folder / "params.csv", ["trial", "state", "value", *keys],
              [[r.number, r.state, r.value, *(r.params.get(k, "") for k in keys)] for r in shown])
    plt = pyplot()
    figure, panels = plt.subplots(1, max(1, len(keys)), figsize=(4.2 * max(1, len(keys)), 3.8), squeeze=False)
    for axes, key in zip(panels[0], keys):
        for state, colour in STATE_COLOURS.items():
            points = [(r.params[key], r.value) for r in shown if r.state == state and key in r.params]
            if points:
                axes.scatter(*zip(*points), c=colour, label=state, s=24)
        values = [r.params[key] for r in shown if isinstance(r.params.get(key), (int, float))]
        if values and min(values) > 0 and max(values) / min(values) > 100:
            axes.set_xscale("log")
        axes.set(xlabel=key, ylabel=f"{settings.objective} (val)")
        axes.grid(alpha=0.3)
    panels[0][0].legend(fontsize=8)
    figure.suptitle(f"study {study}: each param against {settings.objective}")
    save(figure, folder / "params.png")


def save(figure, path: Path) -> None:
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    pyplot().close(figure)


def report(study: str, folder: Path | None = None) -> str:
    """The ranked table, the best trial's command, and where the pictures are (also written)."""
    rows, settings = load(study)
    if not rows:
        raise PipelineError(f"--study {study}: the study has no trials yet")
    folder = folder or Path("plots") / "tune" / study
    draw_history(rows, settings, folder, study)
    draw_params(rows, settings, folder, study)
    counts = {s: sum(r.state == s for r in rows) for s in STATE_ORDER if any(r.state == s for r in rows)}
    lines = [f"study {study}: {len(rows)} trials ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
             f"objective {settings.objective} on val, {OBJECTIVES[settings.objective]}d; sampler {settings.sampler}, "
             f"pruner {settings.pruner}", "", table(rows, settings)]
    complete = [r for r in ranked(rows, settings) if r.state == "complete"]
    if complete:
        best = complete[0]
        lines += [f"best: {best.experiment} (trial {best.number}), {settings.objective} {best.value:.4g}; "
                  f"run it again outside the study:", f"    {reproduce_line(best)}"]
    lines += ["", f"pictures: {folder / 'history.png'}, {folder / 'params.png'} "
                  f"(`dvc plots show {folder / 'history.csv'} -x trial -y best`)"]
    return "\n".join(lines) + "\n"
