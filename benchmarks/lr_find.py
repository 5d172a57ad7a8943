"""Benchmark: does the learning rate lr_find suggests train as well as the one in params.yaml?

    python -m benchmarks.lr_find           # after `dvc repro` (it trains on data/augmented); about a minute

Runs `python -m tools.lr_find` on the committed params in a scratch copy of the project holding
this workspace's data, then trains and evaluates twice, side by side: with params.yaml's train.lr
and with the suggestion. The claim to hold: the suggestion reaches at least 98% test accuracy on the
digits, within a point of the hand-tuned rate. (The tool's behaviour, its files and refusals, is
tested in tests/test_pipeline.py; its accuracy is measured here.)
"""
from __future__ import annotations

import re

from ruamel.yaml import YAML

from benchmarks.harness import scratch_project, set_param, run_tool, train_and_evaluate


def main() -> None:
    with scratch_project() as work:
        params = YAML(typ="safe").load((work / "params.yaml").read_text())
        output = run_tool(work, "from classifier.runtime.errors import run_stage; from tools import lr_find; "
                                "run_stage(lr_find.main)")
        suggestion = float(re.search(r"suggested train.lr ([0-9.e+-]+)", output).group(1))
        results = {}
        for name, lr in (("params.yaml", params["train"]["lr"]), ("lr_find", suggestion)):
            set_param(work, "train", "lr", lr)
            results[name] = (lr, train_and_evaluate(work))
    model, epochs = params["model"]["name"], params["train"]["epochs"]
    print(f"{model}, {epochs} epochs, the committed params but train.lr")
    print(f"{'train.lr from':14} {'lr':>8} {'test acc':>9} {'test loss':>10}")
    for name, (lr, r) in results.items():
        print(f"{name:14} {lr:8.3g} {r['test_acc']:9.4f} {r['loss']:10.4f}")
    (_, ours), (_, hand) = results["lr_find"], results["params.yaml"]
    print(f"difference (lr_find - params.yaml): test accuracy {ours['test_acc'] - hand['test_acc']:+.4f}")


if __name__ == "__main__":
    main()
