"""Does the label audit find wrong labels, and does fixing them give the accuracy back? (issue 39)

    python -m benchmarks.label_noise [--seeds 3] [--first-seed 0] [--rate 0.05] [--folds 5]

On the default digits and the default model: for each seed, 5% of the train split's labels are
flipped at random to another class (through data/labels.csv, as a user's wrong labels would be), the
audit stage runs with audit.folds 5, and `tools.relabel --from-audit --below 1` accepts every label
issue it lists (each to its suggested class). Reported: the recall and precision of the flipped
images among those flagged, and the test accuracy of train on the clean labels, on the noisy ones
and on the audit-fixed ones (train.seed = the seed). Goals: recall >= 0.8, precision >= 0.7, the
fixed labels' accuracy within 0.3 points of the clean labels'. Runs in a scratch copy of the
project with this workspace's data (`dvc repro` first); about 200 s a seed on 2 CPU cores (10 minutes).
"""
from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import pandas as pd

from benchmarks.harness import edit_params, run_stages, run_tool, scratch_project
from classifier.data.label_fixes import LabelFix, format_label_fixes

PIPELINE = ("split", "prepare", "augment", "train", "evaluate")


def flip_labels(work, rate: float, seed: int) -> set[str]:
    """data/labels.csv giving `rate` of the train split's images (drawn with `seed`) another class, drawn
    at random; the keys flipped."""
    train = pd.read_csv(work / "data/split/train.csv", dtype=str)
    classes = sorted(set(train["label"]))
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(train), round(rate * len(train)), replace=False)
    fixes = []
    for row in rows:
        others = [c for c in classes if c != train["label"].iloc[row]]
        fixes.append(LabelFix(train["path"].iloc[row], others[rng.integers(len(others))], "benchmark: flipped", 0))
    (work / "data/labels.csv").write_text(format_label_fixes(fixes))
    return {fix.key for fix in fixes}


def test_accuracy(work) -> float:
    run_stages(work, *PIPELINE)
    return json.loads((work / "metrics/summary.json").read_text())["test_acc"]


def one_seed(work, seed: int, rate: float, folds: int) -> dict:
    (work / "data/labels.csv").write_text("key,label,note\n")
    edit_params(work, {"train": {"seed": seed}, "audit": {"folds": 0}})
    clean = test_accuracy(work)
    flipped = flip_labels(work, rate, seed)
    noisy = test_accuracy(work)
    edit_params(work, {"audit": {"folds": folds}})
    run_stages(work, "audit")
    issues = pd.read_csv(work / "plots/audit/issues.csv", dtype=str, keep_default_na=False)
    flagged = set(issues[issues["issues"].str.contains("label")]["key"])
    run_tool(work, "from tools import relabel; relabel.main(['--from-audit', '--below', '1'])")
    edit_params(work, {"audit": {"folds": 0}})
    fixed = test_accuracy(work)
    found = len(flagged & flipped)
    return {"seed": seed, "flipped": len(flipped), "flagged": len(flagged), "recall": found / len(flipped),
            "precision": found / max(len(flagged), 1), "clean": clean, "noisy": noisy, "fixed": fixed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.label_noise", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+SEEDS-1 (more seeds in another run)")
    parser.add_argument("--rate", type=float, default=0.05)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    rows = []
    with scratch_project() as work:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows.append(one_seed(work, seed, args.rate, args.folds))
            row = rows[-1]
            print(f"seed {seed}: {row['flipped']} flipped, {row['flagged']} flagged: recall {row['recall']:.3f}, "
                  f"precision {row['precision']:.3f}; test accuracy clean {row['clean']:.2%}, noisy {row['noisy']:.2%}, "
                  f"fixed {row['fixed']:.2%}", flush=True)

    def mean_std(key: str, scale: float = 1.0) -> str:
        values = [r[key] * scale for r in rows]
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0:.3f}"
    print(f"\n{args.rate:.0%} of train's labels flipped, audit.folds {args.folds}, {args.seeds} seeds (mean ± std):")
    print(f"  recall    {mean_std('recall')}   (goal >= 0.8)")
    print(f"  precision {mean_std('precision')}   (goal >= 0.7)")
    for key in ("clean", "noisy", "fixed"):
        print(f"  test accuracy, {key:<5} labels: {mean_std(key, 100)} %")
    gap = statistics.mean(r["clean"] - r["fixed"] for r in rows) * 100
    print(f"  clean - fixed: {gap:.2f} points   (goal <= 0.3)")


if __name__ == "__main__":
    main()
