"""A markdown table of experiments, the way the experiment logs tabled their runs.

    python -m tools.report [-o report.md] [--sort-by val_acc] [--seeds]
    python -m tools.report --per-class [--split test]     # this workspace's per-class scores
    python -m tools.report --study NAME                   # a tools.tune study: trials ranked, pictures
    python -m tools.report --errors EXP_A EXP_B           # test images one gets right and the other wrong

Reads `dvc exp show --json`: one row per commit and experiment, its state (done, running, queued,
failed; the workspace `stale` when `dvc status` says its outputs are not its params'), the params
that differ between them, and the key metrics, sorted best first. A running
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
import dataclasses
import json
import os
import shutil
from pathlib import Path

from classifier.experiments.table import (PER_CLASS_FILE, Experiment, aggregate_seeds, dvc_experiments,
                                          experiments_from_json, markdown_table, per_class_table, seeds_table)
from classifier.runtime.errors import PipelineError, printable, run_stage
from classifier.runtime.outputs import atomic_file
from classifier.experiments.dvc_client import run_dvc

DEFAULT_WIDTH = 160  # a line of the table on stdout when it is no terminal


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.report", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--sort-by", default="val_acc", help="metric of metrics/summary.json to sort by, best first (default: %(default)s)")
    parser.add_argument("--seeds", action="store_true", help="one row per params, mean ± std over the seeds")
    parser.add_argument("--per-class", action="store_true",
                        help=f"instead: {PER_CLASS_FILE} of this workspace as a table, worst F1 first")
    parser.add_argument("--study", help="instead: the tools.tune study NAME, its trials ranked, the best one's "
                                        "command, and pictures in plots/tune/NAME (classifier/experiments/study.py)")
    parser.add_argument("--errors", nargs=2, metavar=("A", "B"),
                        help="instead: the test images run A gets right and B wrong, and the other way round (an "
                             "experiment's name, a git revision, or workspace)")
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
        from classifier.experiments.study import report
        write_table(report(args.study), args.output)
        return
    if args.errors:
        from classifier.experiments.error_diff import compare_runs
        write_table(compare_runs(*args.errors), args.output)
        return
    if args.per_class:
        if not PER_CLASS_FILE.is_file():
            raise PipelineError(f"{PER_CLASS_FILE} not found: it is made by the evaluate stage; run `dvc repro` first")
        write_table(per_class_table(json.loads(PER_CLASS_FILE.read_text()), args.split), args.output)
        return
    experiments = experiments_from_json(dvc_experiments())
    if not experiments:
        raise PipelineError("no experiments with results: run `dvc repro` or `dvc exp run` first")
    experiments, stale = mark_stale_workspace(experiments)
    check_sort_by(args.sort_by, experiments)
    done = [e for e in experiments if e.state == "done"]  # seed means of finished runs only
    width = args.width or shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    if args.seeds:
        groups = aggregate_seeds(done)
        write_table(seeds_table(groups, args.sort_by), args.output, seeds_table(groups, args.sort_by, width=width))
    else:
        write_table(markdown_table(experiments, args.sort_by), args.output,
                    markdown_table(experiments, args.sort_by, width=width))
    if stale:
        print(stale)


def mark_stale_workspace(experiments: list[Experiment]) -> tuple[list[Experiment], str]:
    """The workspace's row, when it has one, marked `stale` where `dvc status` says its outputs are not
    those of its params and code (an experiment's outputs under params set back by hand), and a line
    saying so and what to run; else the rows as they are and ''."""
    if not any(e.name == "workspace" for e in experiments):
        return experiments, ""
    changed = list(json.loads(run_dvc("status", "--json") or "{}"))  # the stages, in DVC's order
    if not changed:
        return experiments, ""
    rows = [dataclasses.replace(e, state="stale") if e.name == "workspace" else e for e in experiments]
    return rows, (f"workspace: its scores are not those of its params ({', '.join(changed)} changed, `dvc status`): "
                  f"`dvc repro` makes them, `make restore` goes back to the last commit's")


if __name__ == "__main__":
    run_stage(main)
