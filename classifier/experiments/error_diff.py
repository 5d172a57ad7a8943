"""`python -m tools.report --errors A B`: the test images one run gets right and the other wrong, from
each run's plots/eval/test_predictions.csv (actual, predicted, key: committed with the plots, so git
holds it for every commit and experiment)."""
from __future__ import annotations

import io
import subprocess

import pandas as pd

from classifier.runtime import paths
from classifier.runtime.errors import PipelineError

PREDICTIONS = paths.EVAL_PLOTS / "test_predictions.csv"
LISTED = 20  # images listed per group; the counts are of all


def revision(name: str) -> str:
    """An experiment's name as its git ref (refs/exps/...), else `name` as a git revision."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], capture_output=True,
                          text=True).stdout.split()
    return next((ref for ref in refs if ref.rsplit("/", 1)[-1] == name), name)


def predictions_of(name: str) -> pd.DataFrame:
    """A run's test predictions: `workspace`'s file, or the file at an experiment or git revision."""
    if name == "workspace":
        if not PREDICTIONS.is_file():
            raise PipelineError(f"{PREDICTIONS} not found: it is made by the evaluate stage; run `dvc repro` first")
        text = PREDICTIONS.read_text()
    else:
        shown = subprocess.run(["git", "show", f"{revision(name)}:{PREDICTIONS.as_posix()}"], capture_output=True,
                               text=True)
        if shown.returncode:
            raise PipelineError(f"--errors {name}: no {PREDICTIONS} there (an experiment's name, a git revision or "
                                f"workspace; `dvc exp show` lists them)")
        text = shown.stdout
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    if "key" not in table:
        raise PipelineError(f"--errors {name}: its {PREDICTIONS} has no key column (written before keys were "
                            "recorded): rerun its evaluate")
    return table.set_index("key")


def right_and_wrong(a: pd.DataFrame, b: pd.DataFrame, a_name: str, b_name: str) -> str:
    """The report: counts, then the images each gets right that the other gets wrong."""
    if set(a.index) != set(b.index):
        common = len(set(a.index) & set(b.index))
        raise PipelineError(f"--errors: {a_name} and {b_name} were scored on different test sets ({common} of "
                            f"{len(a)} and {len(b)} images in common): compare runs of the same data")
    b = b.loc[a.index]
    a_right, b_right = a["predicted"] == a["actual"], b["predicted"] == b["actual"]
    lines = [f"{len(a)} test images: {a_name} gets {int(a_right.sum())} right, {b_name} {int(b_right.sum())}"]
    for title, chosen in ((f"{a_name} right, {b_name} wrong", a_right & ~b_right),
                          (f"{b_name} right, {a_name} wrong", b_right & ~a_right),
                          ("both wrong", ~a_right & ~b_right)):
        keys = a.index[chosen.to_numpy()]
        lines.append(f"\n{title}: {len(keys)}")
        lines += [f"  {key}  actual {a.at[key, 'actual']}: {a_name} said {a.at[key, 'predicted']}, {b_name} said "
                  f"{b.at[key, 'predicted']}" for key in keys[:LISTED]]
        if len(keys) > LISTED:
            lines.append(f"  ... and {len(keys) - LISTED} more")
    return "\n".join(lines) + "\n"


def compare_runs(a_name: str, b_name: str) -> str:
    return right_and_wrong(predictions_of(a_name), predictions_of(b_name), a_name, b_name)
