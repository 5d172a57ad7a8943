"""Many experiments on many machines: DVC's queue run on a Ray cluster.

    python -m tools.cluster [--address HOST:PORT] [--cpus-per-run C] [--gpus-per-run G] [--shared-dir DIR]
    python -m tools.cluster -S train.lr=0.01 -S train.epochs=30 [-n NAME]   # one experiment, as dvc exp run -S

Without -S, every experiment in DVC's queue is sent (`dvc exp run --queue -S ...`);
with -S, the one experiment they describe. Each runs as a Ray task on a node with C CPUs and G GPUs
free (C: its train.cpu_threads; G: 1 where the cluster has GPUs), in a fresh clone of the git remote
at the experiment's base commit: `dvc exp run --pull --allow-missing` takes the data stages'
outputs from the DVC remote (they run once, here, not once per node) and `dvc exp push` sends the
result back. This command pulls each experiment as it lands, so `dvc exp show`, tools.report and
`dvc plots diff` show it as if it had run here. One line per experiment as it is sent, starts,
finishes an epoch, lands or fails.

Before anything is sent: the git remote (--git-remote), a default DVC remote in .dvc/config, the
cluster (--address, else $RAY_ADDRESS), and on every node the git remote, a DVC remote or a data
folder that is a local path, and --shared-dir are checked: what is missing is named in one line.
A node lost mid-run: Ray runs the experiment again on another node (--retries), and with --shared-dir
(a folder every node mounts at the same path) train continues from the last epoch the lost node
finished. A run that fails (its params, a NaN loss) is reported once with its log and not run again.
Ctrl-C cancels what has not started (it stays in DVC's queue) and waits for what runs; a second
Ctrl-C stops those too.
"""
from __future__ import annotations

import argparse
import os
import time

from classifier.experiments.cluster import (DEFAULTS, Experiment, Session, check_request, final_table, parse_overrides,
                                            queue_one, queued_experiments)
from classifier.runtime.errors import PipelineError, run_stage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.cluster", description=__doc__.splitlines()[0],
                                     epilog=__doc__[__doc__.index("Without -S"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-S", "--set-param", action="append", metavar="KEY=VALUE",
                        help="send one experiment with this param changed (repeat for more keys)")
    parser.add_argument("-n", "--name", help="with -S: the experiment's name (default: DVC's)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", ""),
                        help="the Ray cluster's head, HOST:PORT (default: $RAY_ADDRESS)")
    parser.add_argument("--cpus-per-run", type=float, help="CPUs each experiment holds (default: its "
                                                           "train.cpu_threads, at least 1)")
    parser.add_argument("--gpus-per-run", type=float, help="GPUs each experiment holds (default: 1 where the "
                                                           "cluster has GPUs, else 0)")
    parser.add_argument("--git-remote", help="the git remote every node clones and pushes to "
                                                               "(default: %(default)s)")
    parser.add_argument("--dvc-remote", help="the DVC remote the nodes pull from and push to (default: the "
                                             "default one)")
    parser.add_argument("--shared-dir", help="a folder every node mounts at this path: train's state, "
                                                         "so a run lost with its node continues elsewhere; "
                                                         "tools.tune's journals")
    parser.add_argument("--retries", type=int, help="runs again of an experiment whose node was lost "
                                                    "(default: %(default)s)")
    parser.set_defaults(**DEFAULTS)  # the library's, which tools.tune --address uses too (-S appends to a copy)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    request = check_request(args)
    overrides = parse_overrides(args.set_param) if args.set_param else None
    experiments = [] if overrides else queued_experiments()
    if overrides is None and not experiments:
        raise PipelineError("DVC's queue is empty: queue experiments with `dvc exp run --queue -S KEY=VALUE` or "
                            "tools.tune, or give -S KEY=VALUE here")
    session = Session(request, experiments or [Experiment.given(args.name or "", overrides)])
    if overrides is not None:
        experiments = queue_one(overrides, args.name)
    started, flight = time.monotonic(), session.flight
    session.send(experiments)
    try:
        session.wait()
    finally:
        session.close()
    table = final_table(flight.landed)
    if table:
        print(table)
    print(f"cluster: {len(flight.landed)} landed, {len(flight.failed)} failed in {time.monotonic() - started:.0f} s; "
          f"`dvc exp show` and `python -m tools.report` compare them", flush=True)
    if flight.failed:
        raise PipelineError(f"{', '.join(flight.failed)} failed on the cluster: "
                            f"{'their logs are' if len(flight.failed) > 1 else 'its log is'} above")


if __name__ == "__main__":
    run_stage(main)
