"""The checks every params section is made of, and the reader that turns params.yaml into dataclasses.

A section is a frozen dataclass (one module each, beside this one) whose fields carry a check and a
one-line meaning (`spec`). A check takes the raw YAML value and returns the converted one, or raises
Invalid with what is allowed; parse_section turns that into the message users see:
    The 'train.lr' parameter must be a float > 0. Got -0.1 instead.
    unknown key 'train.lerning_rate' in params.yaml; did you mean 'train.lr'? valid: batch_size, ...
A stage reads only the sections it declares in dvc.yaml (load_sections); the params stage checks
the whole file first (whole_file.py). This module changes rarely: every stage depends on it.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Any, Callable

from ruamel.yaml import YAML

from classifier.runtime.errors import PipelineError
from classifier.runtime.outputs import expect_unchanged

PARAMS_FILE = Path("params.yaml")
# DVC's run cache drops every key with these names, at any depth, from a stage's cache key (upstream
# treeverse/dvc#10296): a param so named could change and DVC would restore stale outputs.
RUN_CACHE_BLIND_KEYS = ("size", "nfiles")
RENAMED_KEYS = {"prepare.size": "prepare.image_size"}
# Upper bounds keep every run possible: numpy and torch take seeds below 2^32 alike; the rest are
# far beyond any sensible setting yet small enough not to overflow or exhaust memory at once.
MAX_SEED = 2**32 - 1
MAX_COUNT = 1_000_000       # epochs, patience, step sizes, per-class caps
MAX_WIDTH = 65_536          # dense layer widths, conv filters, batch size
MAX_ITEMS = 64              # entries of a list of layers or kernels
MAX_NAMES = 100_000         # entries of a list of class names

# A check takes the raw YAML value and returns the converted value, or raises Invalid("a float > 0").
Check = Callable[[Any], Any]


class Invalid(Exception):
    """Raised by a check with the description of what is allowed."""


def spec(check: Check, doc: str) -> Any:
    """A section field: its check and its meaning (docs/params.md is generated from these)."""
    return dataclasses.field(metadata={"check": check, "doc": doc})


def number(kind: type, *, gt: float | None = None, ge: float | None = None,
           lt: float | None = None, le: float | None = None) -> Check:
    def show(v: float) -> str:
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"
    bounds = [f"{op} {show(v)}" for op, v in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if v is not None]
    what = f"{'an integer' if kind is int else 'a float'}" + (f" {' and '.join(bounds)}" if bounds else "")

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(what)
        try:
            if kind is int and not float(value).is_integer():
                raise Invalid(what)
            value = kind(value)
        except OverflowError:  # an integer too large for a float
            raise Invalid(what) from None
        if (not math.isfinite(value) or (gt is not None and not value > gt) or (ge is not None and not value >= ge)
                or (lt is not None and not value < lt) or (le is not None and not value <= le)):
            raise Invalid(what)
        return value
    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("true or false")
    return value


def choice(*allowed: str) -> Check:
    def check(value: Any) -> str:
        if value not in allowed:
            raise Invalid("one of " + ", ".join(allowed))
        return value
    return check


def string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("a non-empty string")
    return value


def int_list(item: Check, what: str, *, unique: bool = False, most: int = MAX_ITEMS) -> Check:
    """A list of `item`s, at most `most` of them."""
    what = f"{what}, at most {most} of them"

    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or len(value) > most:
            raise Invalid(what)
        try:
            items = tuple(item(v) for v in value)
        except Invalid:
            raise Invalid(what) from None
        if unique and len(set(items)) != len(items):
            raise Invalid(what)
        return items
    return check


def string_list(value: Any) -> tuple[str, ...]:
    if (not isinstance(value, list) or len(value) > MAX_NAMES
            or not all(isinstance(v, (str, int)) and str(v).strip() for v in value)):
        raise Invalid(f"a list of class names, at most {MAX_NAMES:,} of them")
    names = tuple(str(v) for v in value)
    if len(set(names)) != len(names):
        raise Invalid("a list of distinct class names")
    return names


# --------------------------------------------------------------------------------- reading
def section_of(cls: type) -> str:
    """The params.yaml section a dataclass reads (its SECTION)."""
    return cls.SECTION


def shares_section(cls: type) -> bool:
    """True for a dataclass that reads some keys of a section another one reads the rest of (augment)."""
    return getattr(cls, "SHARES_SECTION", False)


def describe(cls: type) -> dict[str, str]:
    """key -> meaning of every key a section dataclass reads."""
    return {f.name: f.metadata["doc"] for f in dataclasses.fields(cls)}


def dvc_params(classes: tuple[type, ...]) -> list[str]:
    """What dvc.yaml's `params:` of a stage reading `classes` lists: a section, or its keys one by one
    when the stage reads only some of them (DVC then reruns it for those alone)."""
    entries: list[str] = []
    for cls in classes:
        if shares_section(cls):
            entries += [f"{section_of(cls)}.{key}" for key in describe(cls)]
        else:
            entries.append(section_of(cls))
    return entries


def as_plain(params: Any) -> dict[str, Any]:
    """A section's dataclass as plain YAML-like values (tuples -> lists): what parse_section reads back,
    and what torch.load(weights_only=True) accepts inside a checkpoint."""
    def plain(value: Any) -> Any:
        return [plain(v) for v in value] if isinstance(value, tuple) else value
    return {f.name: plain(getattr(params, f.name)) for f in dataclasses.fields(params)}


def unknown_key(key: str, valid: list[str], prefix: str = "") -> PipelineError:
    guess = difflib.get_close_matches(key, valid, n=1)
    if not guess:  # an abbreviation spelt out: learning_rate -> lr
        initials = "".join(word[:1] for word in key.split("_"))
        guess = [name for name in valid if name == initials]
    hint = f"; did you mean '{prefix}{guess[0]}'?" if guess else ";"
    return PipelineError(f"unknown key '{prefix}{key}' in params.yaml{hint} valid: {', '.join(valid)}")


def refuse_run_cache_blind_keys(tree: Any, prefix: str = "") -> None:
    """Raise on a key named 'size' or 'nfiles' anywhere in `tree`: DVC's run cache ignores it."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(tree, dict) and key in RUN_CACHE_BLIND_KEYS:
            hint = f"; it is now '{RENAMED_KEYS[name]}'" if name in RENAMED_KEYS else ": rename it"
            raise PipelineError(f"key '{name}' in params.yaml cannot be used: DVC's run cache ignores keys named "
                                f"{' or '.join(RUN_CACHE_BLIND_KEYS)} (DVC bug 10296), so changing it would restore "
                                f"stale outputs{hint}")
        refuse_run_cache_blind_keys(value, name)


def shown(value: Any, limit: int = 80) -> str:
    """A value as the error message quotes it: one line, cut at `limit` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} entries)" if isinstance(
        value, (list, dict)) else f"{text[:limit]}..."


def parse_section(cls: type, raw: Any, section_keys: list[str] | None = None) -> Any:
    """Validate one section's mapping into `cls`; raises PipelineError naming the key. An unknown key
    is refused against `section_keys` (every key of the section), or cls's own keys when it reads the
    whole section; a dataclass reading part of a section leaves unknown keys to the whole-file check."""
    section = section_of(cls)
    if not isinstance(raw, dict):
        raise PipelineError(f"params.yaml: '{section}' must be a mapping of keys, got {raw!r}")
    own = list(describe(cls))
    valid = section_keys if section_keys is not None else None if shares_section(cls) else own
    for key in raw if valid is not None else ():
        if key not in valid:
            raise unknown_key(str(key), valid, f"{section}.")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            raise PipelineError(f"missing key '{section}.{f.name}' in params.yaml ({f.metadata['doc']})")
        try:
            values[f.name] = f.metadata["check"](raw[f.name])
        except Invalid as exc:
            raise PipelineError(
                f"The '{section}.{f.name}' parameter must be {exc}. Got {shown(raw[f.name])} instead.") from None
    return cls(**values)


def read_yaml(path: Path) -> Any:
    return _parse_yaml(path, _read_bytes(path))


MAX_PARAMS_BYTES = 256 * 2**10   # the committed params.yaml is 3 KB; ruamel parses 2 MB in 40 s
MAX_EXPANDED_VALUES = 100_000    # values once YAML aliases are expanded: the committed file has about 200


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise PipelineError(f"{path} not found: run the stage from the project root")
    if path.stat().st_size > MAX_PARAMS_BYTES:  # before parsing: a verdict in a moment, not a minute
        raise PipelineError(f"{path} is {path.stat().st_size:,} bytes, over the {MAX_PARAMS_BYTES // 2**10} KB a "
                            f"params file may be: no param holds that much (lists hold at most a few thousand "
                            f"values; docs/params.md)")
    return path.read_bytes()


def _parse_yaml(path: Path, content: bytes) -> Any:
    try:
        data = YAML(typ="safe").load(content.decode("utf-8"))
    except Exception as exc:  # ruamel raises many parser error types (and a file that is not UTF-8)
        raise PipelineError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    _check_expansion(path, data)
    return data


def _check_expansion(path: Path, data: Any) -> None:
    """YAML aliases (*name) share one object: parsing a 'billion laughs' file is quick, walking its
    values is not. Count the values as the walk would see them, each shared object once (by id), and
    refuse a file that expands past MAX_EXPANDED_VALUES or refers to itself."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def expanded(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise PipelineError(f"{path}: a YAML alias (*name) refers to a value that holds it: write the values out")
        in_progress.add(key)
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        total = 1
        for child in children:
            total += expanded(child)
            if total > MAX_EXPANDED_VALUES:
                raise PipelineError(f"{path} expands to over {MAX_EXPANDED_VALUES:,} values (YAML aliases, *name, "
                                    f"repeat what their anchor, &name, holds): write the values out")
        in_progress.discard(key)
        sizes[key] = total
        return total
    try:
        expanded(data)
    except RecursionError:
        raise PipelineError(f"{path} nests its values too deep: write them out flat") from None


class _Merged:
    """The keys of one section read by two dataclasses (augment and online_augment), as one object."""

    def __init__(self, *parts: Any) -> None:
        self._parts = parts

    def __getattr__(self, name: str) -> Any:
        for part in self._parts:
            if name in describe(type(part)):
                return getattr(part, name)
        raise AttributeError(name)


class Sections:
    """The sections a stage read, as attributes named for their sections: params.train.lr."""

    def __init__(self, parsed: dict[str, Any]) -> None:
        self.__dict__.update(parsed)

    def __getattr__(self, name: str) -> Any:  # only for names not read
        raise AttributeError(f"params section '{name}' was not read by this stage: add its dataclass to the "
                             f"stage's PARAMS and regenerate dvc.yaml (make generated), or DVC will not rerun "
                             f"the stage when it changes")


def sections_from(raw: Any, classes: tuple[type, ...], path: Path = PARAMS_FILE) -> Sections:
    """Parse `classes` out of a params tree already read."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping of sections, got {raw!r}")
    refuse_run_cache_blind_keys(raw)
    parsed: dict[str, list[Any]] = {}
    for cls in classes:
        section = section_of(cls)
        if section not in raw:
            raise PipelineError(f"missing section '{section}' in {path}")
        parsed.setdefault(section, []).append(parse_section(cls, raw[section]))
    return Sections({name: parts[0] if len(parts) == 1 else _Merged(*parts) for name, parts in parsed.items()})


def load_sections(*classes: type, path: Path = PARAMS_FILE) -> Sections:
    """Read params.yaml and validate the sections `classes` read (a stage's PARAMS), nothing else. The
    stage's outputs are switched in only if the file is still what was read (outputs.expect_unchanged)."""
    content = _read_bytes(path)
    expect_unchanged(path, content)
    return sections_from(_parse_yaml(path, content), classes, path)
