"""The params stage: `python -m stages.params` checks the whole of params.yaml, first.

dvc.yaml runs it before ingest, with params.yaml as its dependency: a typo or a bad value anywhere
stops `dvc repro` and `dvc exp run` in one line before any stage does work. When the file passes it
writes the same bytes to data/params.ok every time, so the stages after it rerun only for what
they read themselves.
"""
from __future__ import annotations

from classifier.runtime.errors import run_stage
from classifier.runtime.outputs import atomic_file
from classifier.runtime.paths import PARAMS_OK
from classifier.params.checks import PARAMS_FILE, read_yaml
from classifier.params.whole_file import validate

DEPS = (PARAMS_FILE,)  # the whole file, not sections: any change is checked
OUTS = (PARAMS_OK,)
PASSED = "params.yaml passed every check (python -m stages.params)\n"


def main() -> None:
    validate(read_yaml(PARAMS_FILE))
    if not PARAMS_OK.is_file() or PARAMS_OK.read_text() != PASSED:
        with atomic_file(PARAMS_OK) as tmp:
            tmp.write_text(PASSED)


if __name__ == "__main__":
    run_stage(main)
