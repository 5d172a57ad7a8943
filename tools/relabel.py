"""Fix labels in data/labels.csv, the versioned file the split stage applies (the images stay as they are).

    python -m tools.relabel data/raw/3/digit_0123.png --to 8 --note "a clear 8"
    python -m tools.relabel data/raw/5/digit_0456.png data/raw/5/digit_0457.png --to drop
    python -m tools.relabel data/raw/3/digit_0123.png --undo
    dvc exp run -n relabelled    # reruns split and the stages after it; compare with dvc exp show

Each key is an image's key in data/raw (the path column of data/split/*.csv and of evaluate's
plots/eval/*_predictions.csv), checked against data/raw with the class, so a typo is refused before
the file is written; a key fixed again gets its new line in place of the old.
"""
from __future__ import annotations

import argparse

from classifier.data.label_fixes import DROP, LabelFix, check_label_fixes, format_label_fixes, read_label_fixes
from classifier.data.shards import read_index
from classifier.runtime import paths
from classifier.runtime.errors import PipelineError, run_stage
from classifier.runtime.outputs import atomic_file


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.relabel", description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="+", help="images' keys in data/raw, e.g. data/raw/3/digit_0123.png")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--to", metavar="CLASS", help=f"their right class, or {DROP} to leave them out")
    action.add_argument("--undo", action="store_true", help="remove their lines: back to the label ingest read")
    parser.add_argument("--note", default="", help="why, kept in the file's note column")
    return parser


def relabel(fixes: dict[str, LabelFix], keys: list[str], label: str | None, note: str) -> list[LabelFix]:
    """The file's lines after the change: `keys` set to `label` (None: their lines removed), in the
    file's order, new keys at the end."""
    changed = {key: LabelFix(key, label, note, 0) for key in keys} if label is not None else {}
    kept = [changed.pop(fix.key, fix) for fix in fixes.values() if fix.key not in keys or label is not None]
    return [*kept, *changed.values()]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    fixes = read_label_fixes(paths.LABEL_FIXES)
    if args.undo:
        missing = [key for key in args.keys if key not in fixes]
        if missing:
            raise PipelineError(f"{paths.LABEL_FIXES} has no line for {missing[0]}: nothing to undo")
    else:
        index = read_index(paths.RAW_DIR)
        check_label_fixes([LabelFix(key, args.to, args.note, 0) for key in args.keys],
                          dict(zip(index["key"], index["label"])), "relabel")
    lines = relabel(fixes, args.keys, None if args.undo else args.to, args.note)
    with atomic_file(paths.LABEL_FIXES) as tmp:
        tmp.write_text(format_label_fixes(lines))
    what = "their lines removed" if args.undo else f"now {args.to}"
    print(f"relabel: {len(args.keys)} image(s) {what} in {paths.LABEL_FIXES} ({len(lines)} fix(es) in all); "
          "`dvc exp run` reruns split and the stages after it")


if __name__ == "__main__":
    run_stage(main)
