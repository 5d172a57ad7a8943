"""Commands run by hand beside the pipeline (python -m tools.<name>): predict, report, sweep, pack,
lr_find, export. No pipeline stage imports them, and they import no stage."""
