"""Benchmark: DVC's commands on this project with ruamel's C parser (ruamel.yaml.clib, pinned in
requirements.txt) against its pure-Python one, side by side in one run.

    python -m benchmarks.dvc_yaml [--rounds 5]

DVC parses dvc.yaml and dvc.lock many times a command (this project's generated code deps make
dvc.lock about 1,200 lines), with `YAML(typ="safe")`, which uses the C parser when it is installed.
Each command runs in a fresh process as a user runs it: in this workspace, read-only, `dvc status`,
`dvc exp show --csv` and `dvc repro` with nothing to do; then in a scratch clone of HEAD (with a copy
of the DVC cache, checked out) `dvc exp run -S train.lr=...`, a new rate each time (params, train,
audit and evaluate run). The pure-Python side hides the C module (`sys.modules["_ruamel_yaml"] =
None`, ruamel's own fallback). Interleaved, best of --rounds. Results in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import ROOT, command_env, sh

COMMANDS = (["status"], ["exp", "show", "--csv"], ["repro"])
RUN_DVC = "import sys\n{hide}from dvc.cli import main\nsys.exit(main(sys.argv[1:]))\n"
ENV = command_env(DVC_NO_ANALYTICS="1")


def seconds(args: list[str], pure: bool, cwd: Path = ROOT) -> float:
    code = RUN_DVC.format(hide='sys.modules["_ruamel_yaml"] = None\n' if pure else "")
    return sh([sys.executable, "-c", code, *args], cwd, ENV)[0]


def show(name: str, times: dict[bool, list[float]]) -> None:
    best = {pure: min(values) for pure, values in times.items()}
    print(f"  {name:<24} C parser {best[False]:5.2f} s   pure Python {best[True]:5.2f} s   {best[True] / best[False]:.2f}×",
          flush=True)


def experiment_runs(rounds: int) -> dict[bool, list[float]]:
    """`dvc exp run` in a scratch clone of HEAD, a new train.lr each run."""
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) / "clone"
        sh(["git", "clone", "-q", str(ROOT), str(work)], ROOT, ENV)
        shutil.copytree(ROOT / ".dvc" / "cache", work / ".dvc" / "cache")
        sh([sys.executable, "-m", "dvc", "checkout", "-q"], work, ENV)
        for run in range(rounds):
            for pure in (False, True):
                rate = 0.0311 + 0.001 * (2 * run + pure)  # never the committed rate: each run trains
                times[pure].append(seconds(["exp", "run", "-S", f"train.lr={rate:g}"], pure, work))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    try:
        import _ruamel_yaml  # noqa: F401
    except ImportError:
        sys.exit("ruamel.yaml.clib is not installed: `make venv` installs requirements.txt")
    lock_lines = len((ROOT / "dvc.lock").read_text().splitlines())
    print(f"dvc.lock: {lock_lines} lines; best of {args.rounds}, interleaved")
    for command in COMMANDS:
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for pure in (False, True):
                times[pure].append(seconds(command, pure))
        show(f"dvc {' '.join(command)}", times)
    show("dvc exp run -S train.lr", experiment_runs(args.rounds))


if __name__ == "__main__":
    main()
