"""Random search: queue N seeded random combinations of params as DVC experiments.

    python -m tools.sweep N KEY=DISTRIBUTION [KEY=DISTRIBUTION ...] [--seed 0] [--name sweep]
    dvc queue start -j 2 && python -m tools.report

Distributions: loguniform(LOW,HIGH) (learning rates, weight decay), uniform(LOW,HIGH),
randint(LOW,HIGH) (both ends included) and choice(A,B,...) (values as YAML: numbers, true/false,
names, [lists]). For example

    python -m tools.sweep 8 'train.lr=loguniform(1e-4,1e-1)' 'train.batch_size=choice(32,64,128)'

Every combination is drawn and checked with the rules the stages apply (the whole params file,
cross-field rules, model names) before the first is queued, so a typo or a value out of range
queues nothing; a key given twice is refused. The same --seed draws the same combinations. Each is
queued with `dvc exp run --queue -n NAME-K -S KEY=VALUE ...`, K counting on from the highest NAME-K
any experiment (queued, running, failed or done) already has, so no result is lost to a reused
name. DVC reruns for each only the stages its params touch, and `dvc exp show` and tools.report
compare them when the queue is done.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import random
import re
import signal
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML

from classifier.runtime.dvc_client import run_dvc
from classifier.runtime.errors import PipelineError, Stopped, run_stage
from classifier.params.checks import PARAMS_FILE, read_yaml
from classifier.params.whole_file import SECTIONS, validate

_FORM = re.compile(r"^\s*(loguniform|uniform|randint|choice)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Distribution:
    key: str           # section.name
    kind: str          # loguniform, uniform, randint or choice
    values: tuple      # (low, high) or the choices

    def draw(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return self.values[rng.randrange(len(self.values))]
        low, high = self.values
        if self.kind == "randint":
            return rng.randint(int(low), int(high))
        if self.kind == "loguniform":
            return self.rounded(math.exp(rng.uniform(math.log(low), math.log(high))))
        return self.rounded(rng.uniform(low, high))

    def rounded(self, value: float) -> float:
        """A drawn float as it is queued: 3 significant digits for a log scale, 4 for a linear one
        (readable in `dvc exp show`; finer differences train alike)."""
        return float(f"{value:.3g}") if self.kind == "loguniform" else float(f"{value:.4g}")


def yaml_value(text: str, spec: str) -> Any:
    try:
        return YAML(typ="safe").load(text)
    except Exception:
        raise PipelineError(f"{spec}: {text.strip()!r} is not a YAML value") from None


def _split_arguments(text: str) -> list[str]:
    """'1, [2, 3], a' -> ['1', '[2, 3]', 'a']: commas inside brackets stay."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{" and 1 or 0
        depth -= char in "]}" and 1 or 0
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in [*parts, current] if p.strip()]


def parse_distribution(spec: str) -> Distribution:
    """'train.lr=loguniform(1e-4,1e-1)' -> Distribution; a one-line PipelineError naming the spec otherwise."""
    key, sep, form = spec.partition("=")
    key = key.strip()
    match = _FORM.match(form)
    if not sep or not re.fullmatch(r"\w+\.\w+", key) or not match:
        raise PipelineError(f"{spec!r}: expected KEY=DISTRIBUTION, e.g. train.lr=loguniform(1e-4,1e-1); distributions: "
                            f"loguniform(LOW,HIGH), uniform(LOW,HIGH), randint(LOW,HIGH), choice(A,B,...)")
    kind = match.group(1)
    values = tuple(yaml_value(v, spec) for v in _split_arguments(match.group(2)))
    if kind == "choice":
        if not values:
            raise PipelineError(f"{spec!r}: choice needs at least one value")
        return Distribution(key, kind, values)
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) \
            or not values[0] < values[1]:
        raise PipelineError(f"{spec!r}: {kind} needs two numbers LOW < HIGH")
    if kind == "loguniform" and values[0] <= 0:
        raise PipelineError(f"{spec!r}: loguniform needs LOW > 0")
    if kind == "randint" and not all(float(v).is_integer() for v in values):
        raise PipelineError(f"{spec!r}: randint needs two integers")
    return Distribution(key, kind, values)


def parse_distributions(specs: list[str], what: str) -> list[Distribution]:
    """Every spec parsed; a key given twice is refused (which of the two would count?)."""
    distributions = [parse_distribution(spec) for spec in specs]
    repeated = sorted(key for key, n in Counter(d.key for d in distributions).items() if n > 1)
    if repeated:
        raise PipelineError(f"the {what} gives {', '.join(repeated)} more than once: give each key one distribution")
    return distributions


def draw_combinations(distributions: list[Distribution], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` combinations {key: value}, the same for the same seed."""
    rng = random.Random(seed)
    return [{d.key: d.draw(rng) for d in distributions} for _ in range(count)]


def check_combination(raw_params: dict, combination: dict[str, Any], what: str = "drawn") -> None:
    """The params file with `combination` applied, checked as every stage checks it (cross-field
    rules and the model's name included); raises naming the key otherwise."""
    tree = copy.deepcopy(raw_params)
    for key, value in combination.items():
        section, name = key.split(".")
        if section not in SECTIONS or name not in (tree.get(section) or {}):
            raise PipelineError(f"unknown key '{key}' in the sweep: not a key of {PARAMS_FILE}")
        tree[section][name] = value
    try:
        checked = validate(tree)
        from classifier.models.registry import check_name  # torch: only once the cheap checks passed
        check_name(checked.model.name)
    except PipelineError as exc:
        drawn = " ".join(as_override(k, v) for k, v in combination.items())
        raise PipelineError(f"{exc} ({what}: {drawn}; nothing was queued)") from None


def taken_names() -> set[str]:
    """Every experiment name in this repo: done (on any commit), queued, running or failed."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    try:
        repo = Repo()
    except NotDvcRepoError:
        raise PipelineError(f"{os.getcwd()} is not a DVC repository: run the sweep from the project root") from None
    with repo:
        names = {name for experiments in repo.experiments.ls(all_commits=True).values() for name, _ in experiments}
        queue = repo.experiments.celery_queue
        names |= {entry.name for entry in (*queue.iter_queued(), *queue.iter_active())}
        names |= {result.entry.name for result in queue.iter_done()}
    return {name for name in names if name}


def free_names(prefix: str, count: int, taken: set[str]) -> list[str]:
    """PREFIX-K for K counting on from the highest number in `taken` (so sweep-1..3, then sweep-4..)."""
    numbers = [int(m.group(1)) for name in taken if (m := re.fullmatch(re.escape(prefix) + r"-(\d+)", name))]
    first = max(numbers, default=0) + 1
    return [f"{prefix}-{k}" for k in range(first, first + count)]


def as_override(key: str, value: Any) -> str:
    """KEY=VALUE as `dvc exp run -S` reads it (YAML flow style, so lists and booleans survive)."""
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, (list, tuple)):
        return f"{key}=[{','.join(str(v) for v in value)}]"
    return f"{key}={value}"


def left_queued(queued: list[str]) -> str:
    """What a sweep that stopped early leaves behind, and the command that takes it back."""
    if not queued:
        return ""
    return f"; {', '.join(queued)} stay queued: `dvc queue remove {' '.join(queued)}` removes them"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.sweep", description=__doc__.splitlines()[0],
                                     epilog=__doc__[__doc__.index("Distributions:"):__doc__.index("Every combination")],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("count", type=int, help="combinations to queue")
    parser.add_argument("distributions", nargs="+", metavar="KEY=DISTRIBUTION",
                        help="a params key and how to draw its values (below); quote it for the shell")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default: %(default)s)")
    parser.add_argument("--name", default="sweep", help="experiment names: NAME-1, NAME-2, ... (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not 1 <= args.count <= 1000:
        raise PipelineError(f"the count of combinations must be 1 to 1000. Got {args.count}")
    distributions = parse_distributions(args.distributions, "sweep")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", args.name):
        raise PipelineError(f"--name must be letters, digits, '_', '-' or '.'. Got {args.name!r}")
    raw = read_yaml(PARAMS_FILE)
    combinations = draw_combinations(distributions, args.count, args.seed)
    for combination in combinations:
        check_combination(raw, combination)
    names = free_names(args.name, len(combinations), taken_names())
    queued: list[str] = []
    try:
        for name, combination in zip(names, combinations):
            overrides = [arg for key, value in combination.items() for arg in ("-S", as_override(key, value))]
            run_dvc("exp", "run", "--queue", "-n", name, *overrides, context=left_queued(queued))
            queued.append(name)
            print(f"sweep: queued {name}: {' '.join(overrides[1::2])}", flush=True)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        raise Stopped(signum, f"{len(queued)} of {len(combinations)} experiments were queued{left_queued(queued)}"
                              if queued else "nothing was queued") from None
    print(f"sweep: {len(combinations)} experiments queued; run them with `dvc queue start -j 2`, then "
          f"`python -m tools.report` (or `dvc exp show --only-changed`)")


if __name__ == "__main__":
    run_stage(main)
