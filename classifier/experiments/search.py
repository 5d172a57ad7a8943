"""Search spaces, as tools.tune takes them: KEY=DISTRIBUTION parsed and checked, a combination checked
with the stages' own rules, experiment names that are free, and KEY=VALUE as `dvc exp run -S` reads it.

Distributions: loguniform(LOW,HIGH) (learning rates, weight decay), uniform(LOW,HIGH),
randint(LOW,HIGH) (both ends included) and choice(A,B,...) (values as YAML: numbers, true/false,
names, [lists]).
"""
from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML

from classifier.runtime.errors import PipelineError
from classifier.params.checks import PARAMS_FILE
from classifier.params.whole_file import SECTIONS, validate

_FORM = re.compile(r"^\s*(loguniform|uniform|randint|choice)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Distribution:
    key: str           # section.name
    kind: str          # loguniform, uniform, randint or choice
    values: tuple      # (low, high) or the choices

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


def check_combination(raw_params: dict, combination: dict[str, Any], what: str = "drawn") -> None:
    """The params file with `combination` applied, checked as every stage checks it (cross-field
    rules and the model's name included); raises naming the key otherwise."""
    tree = copy.deepcopy(raw_params)
    for key, value in combination.items():
        section, name = key.split(".")
        if section not in SECTIONS or name not in (tree.get(section) or {}):
            raise PipelineError(f"unknown key '{key}' in the search: not a key of {PARAMS_FILE}")
        tree[section][name] = value
    try:
        checked = validate(tree)
        from classifier.models.registry import check_name  # torch: only once the cheap checks passed
        check_name(checked.model.name)
    except PipelineError as exc:
        drawn = " ".join(as_override(k, v) for k, v in combination.items())
        raise PipelineError(f"{exc} ({what}: {drawn}; nothing was queued)") from None


def free_names(prefix: str, count: int, taken: set[str]) -> list[str]:
    """PREFIX-K for K counting on from the highest number in `taken` (so tune-1..3, then tune-4..)."""
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
    """What a search that stopped early leaves behind, and the command that takes it back."""
    if not queued:
        return ""
    return f"; {', '.join(queued)} stay queued: `dvc queue remove {' '.join(queued)}` removes them"
