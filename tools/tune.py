"""Search: Bayesian with pruning, or random; each trial a DVC experiment, run by DVC's queue.

    python -m tools.tune N KEY=DISTRIBUTION [KEY=DISTRIBUTION ...] [--study NAME] [--jobs J]
                         [--pruner median|halving|none] [--sampler tpe|random] [--seed S]
                         [--address HOST:PORT --shared-dir DIR]     # the trials on a Ray cluster
    python -m tools.report --study NAME

Distributions: loguniform(LOW,HIGH) (learning rates, weight decay), uniform(LOW,HIGH),
randint(LOW,HIGH) (both ends included) and choice(A,B,...) (values as YAML: numbers, true/false,
names, [lists]). For example

    python -m tools.tune 16 'train.lr=loguniform(1e-3,1)' 'train.momentum=uniform(0,0.99)' --study lr-mom
    python -m tools.tune 8 'train.lr=loguniform(1e-4,1e-1)' --sampler random --pruner none --study sweep

The second is a random sweep: seeded random draws, every trial run to its end.

Optuna's sampler (TPE by default) draws each trial's params from what the finished trials scored:
after a few random ones, where the best were. Each trial is queued as `dvc exp run --queue -n
STUDY-K -S KEY=VALUE ... -S tune.study=STUDY -S tune.trial=T`, J at a time (`dvc queue start -j J`;
train takes a GPU no other experiment holds, one each). Inside it, train reports the objective (the
val loss or accuracy, --objective, by default train.monitor) after every epoch and stops when the
study's pruner says so, or (with a pruner) when it is at chance level after --prune-after-epochs,
whatever the other trials: the run ends like early stopping, metrics/train.json says `pruned: true`,
evaluate scores it, and it is an ordinary row of `dvc exp show`. The study is one journal file,
.dvc/tmp/tune/STUDY.journal: running tools.tune again with the same --study adds N trials to it,
the sampler learning from all of them. Every key and value is checked with the stages' own rules
before anything is queued, and each drawn combination before it is; a trial whose run fails (a NaN
loss) is recorded failed and the search goes on. Ctrl-C stops queueing: the trials still queued or
running are listed with the command that removes or stops them; those left to run report to the
study as they end.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from classifier.experiments.dvc_client import queue_states, run_dvc, start_workers, taken_names
from classifier.runtime.errors import PipelineError, Stopped, run_stage
from classifier.params.checks import PARAMS_FILE, read_yaml
from classifier.experiments.search import (Distribution, as_override, check_combination, free_names, left_queued,
                                           parse_distributions)
from classifier.training.tuning import (FOLDER_VARIABLE, OBJECTIVES, PRUNERS, StudySettings, journal_path, make_pruner,
                                        open_storage)

SAMPLERS = ("tpe", "random")
RESERVED = ("tune.",)   # set by tune itself for each trial
POLL_SECONDS = 1.0
QUEUE_EVERY = 5         # polls of the journal per look at DVC's queue
GONE_POLLS = 6          # looks at DVC's queue that a running trial's experiment may be missing before it counts failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.tune", description=__doc__.splitlines()[0],
                                     epilog=__doc__[__doc__.index("Distributions"):__doc__.index("Optuna's")],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("count", type=int, help="trials to add to the study")
    parser.add_argument("distributions", nargs="+", metavar="KEY=DISTRIBUTION",
                        help="a params key and the range to search (below); quote it for the shell")
    parser.add_argument("--study", default="tune", help="the study's name, and its experiments' (STUDY-1, ...); "
                                                        "an existing one goes on (default: %(default)s)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="trials running at once (default: %(default)s)")
    parser.add_argument("--pruner", choices=PRUNERS, help="median (default): stop a trial whose objective is worse "
                        "than the median of the complete trials' at the same epoch; halving: successive halving; with "
                        "either, a trial at chance level is pruned; none: every trial runs to its end")
    parser.add_argument("--sampler", choices=SAMPLERS, help="tpe (default) or random")
    parser.add_argument("--seed", type=int, help="seed of the sampler (default: 0)")
    parser.add_argument("--objective", choices=list(OBJECTIVES), help="what the study optimises, on val "
                                                                      "(default: train.monitor)")
    parser.add_argument("--prune-after-trials", type=int, help="median: complete trials before any is pruned (default: 4)")
    parser.add_argument("--prune-after-epochs", type=int, help="epochs every trial runs before it may be pruned (default: 2)")
    parser.add_argument("--address", help="run the trials on this Ray cluster, HOST:PORT, as tools.cluster does "
                                          "(default: DVC's queue on this machine)")
    parser.add_argument("--shared-dir", help="with --address: a folder every node mounts at this path, where the "
                                             "study's journal is (the trials report to it)")
    return parser


def check_request(args: argparse.Namespace) -> list[Distribution]:
    """The distributions, and every argument checked, before anything is made or queued."""
    if not 0 <= args.count <= 1000:
        raise PipelineError(f"the count of trials must be 0 to 1000. Got {args.count}")
    if not 1 <= args.jobs <= 64:
        raise PipelineError(f"--jobs must be 1 to 64. Got {args.jobs}")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,63}", args.study):
        raise PipelineError(f"--study must be letters, digits, '_', '-' or '.' (at most 64). Got {args.study!r}")
    for flag in ("seed", "prune_after_trials", "prune_after_epochs"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            raise PipelineError(f"--{flag.replace('_', '-')} must be 0 or more. Got {getattr(args, flag)}")
    distributions = parse_distributions(args.distributions, "search")
    reserved = [d.key for d in distributions if d.key.startswith(RESERVED)]
    if reserved:
        raise PipelineError(f"{reserved[0]} is set by tools.tune for each trial: it cannot be searched")
    raw = read_yaml(PARAMS_FILE)
    for combination in corner_combinations(distributions):
        check_combination(raw, combination)
    return distributions


def threads_line(raw: dict, jobs: int, distributions: list[Distribution], cores: int) -> str:
    """A line when `jobs` trials at once would run more of train's threads than this machine has cores
    (train.cpu_threads as params.yaml sets it; not searched): on the CPU they wait on each other."""
    threads = (raw.get("train") or {}).get("cpu_threads")
    if jobs < 2 or not isinstance(threads, int) or threads < 1 or any(d.key == "train.cpu_threads"
                                                                      for d in distributions):
        return ""
    if jobs * threads <= cores:
        return ""
    return (f"tune: {jobs} trials at once x train.cpu_threads {threads} = {jobs * threads} threads on {cores} cores: "
            f"trained on the CPU they wait on each other (benchmarks.threads: two runs of 2 threads on 2 cores took "
            f"3.3x one run's time, of 1 thread each 1.3x); set train.cpu_threads to {max(1, cores // jobs)} in "
            f"params.yaml, or give fewer --jobs")


def corner_combinations(distributions: list[Distribution]) -> list[dict[str, Any]]:
    """Each range's ends and each choice, the other keys at their lower ends: what can be checked of a
    search before the sampler draws it (a key out of range or unknown queues nothing)."""
    base = {d.key: d.values[0] for d in distributions}
    corners = [base]
    for d in distributions:
        corners += [{**base, d.key: value} for value in d.values[1:]]
    return corners


def settings_for(args: argparse.Namespace, stored: dict[str, Any] | None) -> StudySettings:
    """A new study's settings from the flags (defaults: StudySettings, the objective train.monitor), or
    an existing study's, refusing a flag that contradicts them."""
    given = {name: getattr(args, name) for name in ("objective", "pruner", "prune_after_trials",
                                                   "prune_after_epochs", "sampler", "seed")
             if getattr(args, name) is not None}
    if stored is None:
        if "objective" not in given:  # train.monitor, already checked with the whole params file
            given["objective"] = read_yaml(PARAMS_FILE)["train"]["monitor"]
        return StudySettings(**given)
    settings = StudySettings.from_attrs(stored)
    for name, value in given.items():
        if name != "seed" and getattr(settings, name) != value:
            raise PipelineError(f"study '{args.study}' was made with --{name.replace('_', '-')} "
                                f"{getattr(settings, name)}: leave the flag out, or start a new --study")
    return settings


def open_study(args: argparse.Namespace):
    """(the study, its settings): made anew, or the existing one of that name with its trials."""
    import optuna
    path = journal_path(args.study)
    storage = open_storage(path)
    try:
        stored = storage.get_study_user_attrs(storage.get_study_id_from_name(args.study))
    except KeyError:
        stored = None
    settings = settings_for(args, stored)
    # Seeded by the trials so far too: a second run of the same seed draws on, not the first run's draws again.
    so_far = 0 if stored is None else len(storage.get_all_trials(storage.get_study_id_from_name(args.study)))
    seed = (args.seed if args.seed is not None else settings.seed) + so_far
    sampler = (optuna.samplers.TPESampler(seed=seed) if settings.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(study_name=args.study, storage=storage, sampler=sampler,
                                pruner=make_pruner(settings), direction=OBJECTIVES[settings.objective],
                                load_if_exists=True)
    if stored is None:
        for name, value in vars(settings).items():
            study.set_user_attr(name, value)
    print(f"tune: study '{args.study}' in {path}: {so_far} trials so far; objective {settings.objective} "
          f"({OBJECTIVES[settings.objective]}), sampler {settings.sampler}, pruner {settings.pruner}", flush=True)
    return study, settings


def suggest(trial, distribution: Distribution) -> Any:
    """The trial's value for one key, drawn by the study's sampler, as it is queued."""
    key, kind, values = distribution.key, distribution.kind, distribution.values
    if kind == "choice":  # Optuna's choices are plain scalars: each value by its text, as -S gives it
        texts = [as_override(key, v).partition("=")[2] for v in values]
        return values[texts.index(trial.suggest_categorical(key, texts))]
    if kind == "randint":
        return trial.suggest_int(key, int(values[0]), int(values[1]))
    return distribution.rounded(trial.suggest_float(key, values[0], values[1], log=kind == "loguniform"))


@dataclass
class InFlight:
    """The trials of this study queued or running, by experiment name."""
    trials: dict[str, int] = field(default_factory=dict)      # experiment name -> trial number
    missing: Counter = field(default_factory=Counter)          # polls each was in no list of DVC's queue

    def all_running(self, study) -> bool:
        """True while every trial in flight is still running in the journal (no line is due)."""
        import optuna
        trials = study.get_trials(deepcopy=False)
        return all(trials[number].state == optuna.trial.TrialState.RUNNING for number in self.trials.values())


class DvcQueue:
    """Where tools.tune runs its trials by default: DVC's queue workers on this machine."""
    failure_hint = "`dvc queue logs {name}` says why"

    def send(self, names: list[str]) -> None:
        """Nothing to do: DVC's workers take what is queued."""

    def keep_running(self, jobs: int, queued_now: bool, stalled: bool) -> None:
        """`dvc queue start -j JOBS` when a trial was queued (idle workers stop after 10 s), or when
        trials wait and none runs: it starts the workers not running, and leaves the others be."""
        if queued_now or stalled:
            start_workers(jobs)

    def states(self) -> dict[str, str]:
        return queue_states()

    def finish(self) -> None:
        """Nothing to wait for: DVC's workers finish the trials' evaluate on their own."""

    def stop(self) -> str:
        return ""


def queue_trial(study, distributions: list[Distribution], name: str, raw: dict, flight: InFlight) -> None:
    """Ask the sampler for a trial and queue it as experiment `name`; a combination the stages would
    refuse is recorded failed instead (the search goes on)."""
    import optuna
    trial = study.ask()
    combination = {d.key: suggest(trial, d) for d in distributions}
    overrides = [as_override(k, v) for k, v in combination.items()]
    trial.set_user_attr("experiment", name)
    trial.set_user_attr("overrides", overrides)
    try:
        check_combination(raw, combination)
    except PipelineError as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        print(f"tune: {name} (trial {trial.number}) not queued: {exc}", flush=True)
        return
    arguments = [arg for text in (*overrides, f"tune.study={study.study_name}", f"tune.trial={trial.number}")
                 for arg in ("-S", text)]
    try:
        run_dvc("exp", "run", "--queue", "-n", name, *arguments)
    except PipelineError:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    flight.trials[name] = trial.number
    print(f"tune: queued {name} (trial {trial.number}): {' '.join(overrides)}", flush=True)


def adopt_running(study, flight: InFlight) -> None:
    """Trials an earlier tools.tune left queued or running (Ctrl-C, a killed controller) are waited for;
    one whose experiment is gone from DVC's queue is recorded failed."""
    import optuna
    states = queue_states()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        name = trial.user_attrs.get("experiment", "")
        if states.get(name) in ("queued", "running"):
            flight.trials[name] = trial.number
            print(f"tune: waiting for {name} (trial {trial.number}), {states[name]} since an earlier run", flush=True)
        else:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            print(f"tune: {name or 'an unnamed trial'} (trial {trial.number}) was never finished and its experiment "
                  f"is {states.get(name, 'gone')}: recorded failed", flush=True)


def settle(study, settings: StudySettings, flight: InFlight, states: dict[str, str],
           failure_hint: str = DvcQueue.failure_hint) -> None:
    """Each trial that ended since the last look: one line; a failed experiment recorded failed."""
    import optuna
    running = optuna.trial.TrialState.RUNNING
    trials = study.get_trials(deepcopy=False)  # read once; again only after a tell
    for name, number in list(flight.trials.items()):
        trial = trials[number]
        state = states.get(name)
        flight.missing[name] = 0 if state else flight.missing[name] + 1
        if trial.state == running and (state == "failed" or state == "done" or flight.missing[name] > GONE_POLLS):
            study.tell(number, state=optuna.trial.TrialState.FAIL)  # its train never told the end (kill -9, removed)
            trials = study.get_trials(deepcopy=False)
            trial = trials[number]
        if trial.state == running:
            continue
        del flight.trials[name]
        print(f"tune: {name} (trial {number}) {ended_line(trial, settings, name, state, failure_hint)}", flush=True)


def ended_line(trial, settings: StudySettings, name: str, queue_state: str | None,
               failure_hint: str = DvcQueue.failure_hint) -> str:
    epochs = len(trial.intermediate_values)
    last = trial.intermediate_values[max(trial.intermediate_values)] if epochs else None
    if trial.state.name == "COMPLETE":
        return f"complete: {settings.objective} {trial.value:.4g} after {epochs} epochs"
    if trial.state.name == "PRUNED":
        return f"pruned after {epochs} epochs ({settings.objective} {last:.4g})"
    why = failure_hint.format(name=name) if queue_state else "its experiment is gone from DVC's queue"
    return f"failed after {epochs} epochs: {why}"


def search(study, settings: StudySettings, distributions: list[Distribution], count: int, jobs: int,
           runner=None) -> None:
    """Keep `jobs` trials in DVC's queue until `count` more have been asked and every one has ended;
    `runner` runs them (DvcQueue, or tools.cluster's ClusterQueue)."""
    runner = runner or DvcQueue()
    raw = read_yaml(PARAMS_FILE)
    flight = InFlight()
    adopt_running(study, flight)
    runner.send(list(flight.trials))
    names = iter(free_names(study.study_name, count, taken_names()))
    asked, stalled, polls = 0, False, 0
    try:
        while asked < count or flight.trials:
            queued_now = False
            while asked < count and len(flight.trials) < jobs:
                name = next(names)
                queue_trial(study, distributions, name, raw, flight)
                asked, queued_now = asked + 1, True
                if name in flight.trials:
                    runner.send([name])
            runner.keep_running(jobs, queued_now, stalled)
            stalled = False
            time.sleep(POLL_SECONDS)
            polls += 1
            if polls % QUEUE_EVERY == 0 or not flight.all_running(study):
                # The journal says when a trial ends (its train tells it); DVC's queue, slower to read,
                # is looked at now and then, for a run killed before it could tell.
                states = runner.states()
                waiting = [name for name in flight.trials if states.get(name) == "queued"]
                stalled = bool(waiting) and not any(states.get(n) == "running" for n in flight.trials)
                settle(study, settings, flight, states, runner.failure_hint)
        runner.finish()
    except KeyboardInterrupt as exc:
        stopped = runner.stop()
        raise Stopped(getattr(exc, "signum", signal.SIGINT), stopped or stopped_line(flight)) from None


def stopped_line(flight: InFlight) -> str:
    """What a Ctrl-C leaves: the queued trials and the command that removes them; the running ones."""
    states = queue_states() if flight.trials else {}
    queued = [name for name in flight.trials if states.get(name) == "queued"]
    running = [name for name in flight.trials if states.get(name) == "running"]
    line = f"tune stopped queueing{left_queued(queued)}" if queued else "tune stopped queueing; nothing is queued"
    if running:
        line += f"; {', '.join(running)} still run and report to the study as they end (`dvc queue kill " \
                f"{' '.join(running)}` stops them)"
    return line


def cluster_queue(args: argparse.Namespace):
    """--address: tools.cluster's checks and connection, and the study's journal in --shared-dir, which
    the trials on every node write to (TUNE_DIR, there and here)."""
    from classifier.experiments import cluster
    if not args.shared_dir:
        raise PipelineError("--address needs --shared-dir: a folder every node mounts at the same path, where the "
                            "trials on the cluster report to the study")
    request = cluster.check_request(argparse.Namespace(**{**cluster.DEFAULTS, "address": args.address,
                                                          "shared_dir": args.shared_dir}))
    os.environ[FOLDER_VARIABLE] = f"{request.shared_dir}/tune"
    return cluster.ClusterQueue(request)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    distributions = check_request(args)
    runner = cluster_queue(args) if args.address else None
    hint = "" if args.address else threads_line(read_yaml(PARAMS_FILE), args.jobs, distributions, os.cpu_count() or 1)
    if hint:
        print(hint, flush=True)
    study, settings = open_study(args)
    search(study, settings, distributions, args.count, args.jobs, runner)
    print(f"tune: study '{args.study}' has {len(study.trials)} trials; `python -m tools.report --study {args.study}` "
          f"ranks them and draws what was learnt")


if __name__ == "__main__":
    run_stage(main)
