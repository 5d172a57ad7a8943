"""Commands run by hand beside the pipeline (python -m tools.<name>): predict, report, tune, cluster,
pack, lr_find, export, and the generators of dvc.yaml's deps and params (dvc_yaml) and of
docs/params.md (params_doc). Each ends through run_stage; no pipeline stage imports them, and they
import no stage and no other command (what two share is in classifier/experiments/)."""

import sys

if sys.argv[:1] == ["-m"]:  # `python -m <this package>.<module>` is starting: no traceback for a Ctrl-C while it imports
    from classifier.runtime.errors import guard_start
    guard_start()
