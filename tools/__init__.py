"""Commands run by hand beside the pipeline (python -m tools.<name>): predict, report, sweep, pack,
lr_find, export, and the generators of dvc.yaml's deps and params (dvc_yaml) and of docs/params.md
(params_doc). No pipeline stage imports them, and they import no stage."""
