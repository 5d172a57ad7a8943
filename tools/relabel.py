"""Fix labels in data/labels.csv, the versioned file the split stage applies (the images stay as they are).

    python -m tools.relabel data/raw/3/digit_0123.png --to 8 --note "a clear 8"
    python -m tools.relabel data/raw/5/digit_0456.png data/raw/5/digit_0457.png --to drop
    python -m tools.relabel data/raw/3/digit_0123.png --undo
    python -m tools.relabel --from-audit --below 0.05   # the audit's label issues, to its suggested classes
    dvc exp run -n relabelled    # reruns split and the stages after it; compare with dvc exp show

Each key is an image's key in data/raw (the path column of data/split/*.csv and of evaluate's
plots/eval/*_predictions.csv), checked against data/raw with the class, so a typo is refused before
the file is written; a key fixed again gets its new line in place of the old. --from-audit takes
the label issues of the audit stage (plots/audit/issues.csv) whose label quality is below --below,
each to the class the audit suggests, with its quality in the note: look at them first. A class
that split.merge makes of several (the audit suggests those) is written as the first of them by
name: split applies the fixes, then merges.
"""
from __future__ import annotations

import argparse
import dataclasses

import pandas as pd

from classifier.data.label_fixes import DROP, LabelFix, check_label_fixes, format_label_fixes, read_label_fixes
from classifier.data.shards import read_index
from classifier.params.checks import load_sections
from classifier.params.split import SplitParams
from classifier.runtime import paths
from classifier.runtime.errors import PipelineError, run_stage
from classifier.runtime.outputs import atomic_file


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.relabel", description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", help="images' keys in data/raw, e.g. data/raw/3/digit_0123.png")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--to", metavar="CLASS", help=f"their right class, or {DROP} to leave them out")
    action.add_argument("--undo", action="store_true", help="remove their lines: back to the label ingest read")
    action.add_argument("--from-audit", action="store_true",
                        help=f"the label issues in {AUDIT_ISSUES} below --below, each to its suggested class")
    parser.add_argument("--below", type=float, metavar="QUALITY",
                        help="with --from-audit: the label quality (0 to 1) under which an issue is fixed")
    parser.add_argument("--note", default="", help="why, kept in the file's note column")
    return parser


AUDIT_ISSUES = paths.AUDIT_PLOTS / "issues.csv"


def audit_fixes(below: float) -> list[LabelFix]:
    """The audit's label issues below `below`, each to the class it suggests."""
    issues = pd.read_csv(AUDIT_ISSUES, dtype={"key": str, "given": str, "suggested": str}, keep_default_na=False)
    quality = pd.to_numeric(issues["label_quality"], errors="coerce")
    chosen = issues[issues["issues"].str.contains("label") & (quality < below)]
    return [LabelFix(row["key"], row["suggested"], f"audit: label quality {float(row['label_quality']):.3f}, was "
                     f"{row['given']}", 0) for _, row in chosen.iterrows()]


def relabel(fixes: dict[str, LabelFix], keys: list[str], label: str | None, note: str) -> list[LabelFix]:
    """The file's lines after the change: `keys` set to `label` (None: their lines removed), in the
    file's order, new keys at the end."""
    changed = {key: LabelFix(key, label, note, 0) for key in keys} if label is not None else {}
    kept = [changed.pop(fix.key, fix) for fix in fixes.values() if fix.key not in keys or label is not None]
    return [*kept, *changed.values()]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.from_audit:
        if args.keys:
            raise PipelineError("--from-audit takes the images from the audit's list: name no keys beside it")
        return apply_audit(args.below)
    if not args.keys:
        raise PipelineError("name the images to fix (their data/raw keys), or use --from-audit")
    fixes = read_label_fixes(paths.LABEL_FIXES)
    written = None
    if args.undo:
        missing = [key for key in args.keys if key not in fixes]
        if missing:
            raise PipelineError(f"{paths.LABEL_FIXES} has no line for {missing[0]}: nothing to undo")
    else:
        written = check_against_raw([LabelFix(key, args.to, args.note, 0) for key in args.keys], "relabel")[0].label
    lines = relabel(fixes, args.keys, written, args.note)
    write_fixes(lines)
    what = ("their lines removed" if args.undo else f"now {args.to}"
            + (f" (written {written}, which split.merge makes {args.to})" if written != args.to else ""))
    print(f"relabel: {len(args.keys)} image(s) {what} in {paths.LABEL_FIXES} ({len(lines)} fix(es) in all); "
          "`dvc exp run` reruns split and the stages after it")


def apply_audit(below: float | None) -> None:
    """--from-audit: the audit's label issues below `below` written as fixes (a key already fixed gets
    the audit's class instead), each checked against data/raw first."""
    if below is None or not 0 < below <= 1:
        raise PipelineError(f"--from-audit needs --below QUALITY, from 0 to 1 (got {below}): the label quality "
                            f"under which the issues of {AUDIT_ISSUES} are fixed")
    chosen = audit_fixes(below)
    if not chosen:
        raise PipelineError(f"no label issue below {below:g} in {AUDIT_ISSUES} (with audit.folds: 0 it lists none: "
                            "`dvc exp run -S audit.folds=5` audits)")
    chosen = check_against_raw(chosen, str(AUDIT_ISSUES))
    fixes = read_label_fixes(paths.LABEL_FIXES)
    fixes.update({fix.key: fix for fix in chosen})
    write_fixes(list(fixes.values()))
    print(f"relabel: {len(chosen)} label issue(s) of {AUDIT_ISSUES} below {below:g} fixed to the suggested class in "
          f"{paths.LABEL_FIXES} ({len(fixes)} fix(es) in all); `dvc exp run` reruns split and the stages after it")


def check_against_raw(fixes: list[LabelFix], source: str) -> list[LabelFix]:
    """The fixes as written: each names an image of data/raw and one of its classes (split checks the
    file the same way), a name split.merge gives to several classes written as the first of them."""
    index = read_index(paths.RAW_DIR)
    labels = dict(zip(index["key"], index["label"]))
    merged: dict[str, str] = {}
    for old, new in sorted(load_sections(SplitParams).split.merge):
        merged.setdefault(new, old)
    classes = set(labels.values())
    fixes = [dataclasses.replace(fix, label=merged[fix.label]) if fix.label in merged and fix.label not in classes
             else fix for fix in fixes]
    check_label_fixes(fixes, labels, source)
    return fixes


def write_fixes(fixes: list[LabelFix]) -> None:
    with atomic_file(paths.LABEL_FIXES) as tmp:
        tmp.write_text(format_label_fixes(fixes))


if __name__ == "__main__":
    run_stage(main)
