"""Label fixes as versioned data: data/labels.csv, one line per image whose label is wrong.

    key,label,note
    data/raw/3/digit_0123.png,8,"a clear 8, labelled 3 (audit 2026-12-07)"
    data/raw/5/digit_0456.png,drop,not a digit

`key` is the image's key in data/raw (the path column of data/split/*.csv and of the audit's and
evaluate's per-image lists), `label` a class of the source (before split.merge) or `drop`, `note`
free text. The split stage applies the file (the first stage that reads labels: the images, and
ingest, are never touched), after drawing the splits from the labels ingest read: a fixed image
stays in its split. An edit to the file reruns split and the stages after it. Written by hand
or by `python -m tools.relabel`; a bad line is one error naming the file and the line.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from classifier.runtime.errors import PipelineError

HEADER = ("key", "label", "note")
DROP = "drop"


@dataclass(frozen=True)
class LabelFix:
    key: str
    label: str        # a class name, or DROP
    note: str
    line: int         # its line in the file (1: the header), for errors


def parse_label_fixes(text: bytes, path: Path) -> dict[str, LabelFix]:
    """The fixes in a labels file's bytes, by key. Refused in one line naming `path` and the line:
    text that is not UTF-8, another header, a line with more than three fields or an empty key or
    label, a key given twice."""
    try:
        decoded = text.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path}: not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start}): "
                            "save it as UTF-8") from None
    rows = list(csv.reader(io.StringIO(decoded, newline="")))
    if not rows or tuple(field.strip() for field in rows[0]) != HEADER:
        raise PipelineError(f"{path}: its first line must be the header {','.join(HEADER)}")
    fixes: dict[str, LabelFix] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(field.strip() for field in row):
            continue
        if len(row) > len(HEADER):
            raise PipelineError(f"{path}, line {line}: {len(row)} fields, expected key,label,note "
                                "(quote a note that holds a comma)")
        key, label, note = (field.strip() for field in [*row, "", ""][:3])
        if not key or not label:
            raise PipelineError(f"{path}, line {line}: the {'key' if not key else 'label'} is empty")
        if key in fixes:
            raise PipelineError(f"{path}, line {line}: {key} is fixed twice (line {fixes[key].line} too)")
        fixes[key] = LabelFix(key, label, note, line)
    return fixes


def read_label_fixes(path: Path) -> dict[str, LabelFix]:
    """parse_label_fixes of the file at `path`; a missing file is no fixes."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        return {}
    return parse_label_fixes(text, path)


def check_label_fixes(fixes: Iterable[LabelFix], labels: dict[str, str], source: str) -> None:
    """Every fix names an image of `labels` (key -> its label in data/raw) and a class there, or drop;
    an error names `source` and the fix's line (if it has one)."""
    classes = sorted(set(labels.values()))
    for fix in fixes:
        where = f"{source}, line {fix.line}" if fix.line else source
        if fix.key not in labels:
            raise PipelineError(f"{where}: {fix.key} is not an image of data/raw "
                                "(keys are data/split/*.csv's paths)")
        if fix.label != DROP and fix.label not in classes:
            raise PipelineError(f"{where}: class '{fix.label}' does not exist; classes: "
                                f"{', '.join(classes)} (or {DROP})")


def apply_label_fixes(rows: pd.DataFrame, fixes: dict[str, LabelFix],
                      rename: Callable[[str], str | None] = lambda label: label) -> tuple[pd.DataFrame, set, set]:
    """`rows` (path, label, ...: one split's, labels final) with each fix applied: the label replaced by
    rename(fix's label) (split.merge's name; None, or drop: the row left out). Returns the rows, and the
    keys relabelled and dropped. Applied after the splits are drawn, so a fixed image stays in its
    split: a test set compared across label fixes is the same images (less those dropped)."""
    if not fixes:
        return rows, set(), set()
    fixed = rows["path"].map({key: (None if fix.label == DROP else rename(fix.label)) for key, fix in fixes.items()})
    listed = rows["path"].isin(list(fixes))
    dropped = listed & fixed.isna()
    changed = listed & ~dropped & (fixed != rows["label"])
    out = rows.assign(label=fixed.where(changed, rows["label"]))[~dropped].reset_index(drop=True)
    return out, set(rows["path"][changed]), set(rows["path"][dropped])


def format_label_fixes(fixes: list[LabelFix]) -> str:
    """The file's text for `fixes`, in their order."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for fix in fixes:
        writer.writerow((fix.key, fix.label, fix.note))
    return out.getvalue()
