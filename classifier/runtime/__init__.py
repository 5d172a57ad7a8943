"""How a stage runs and ends: the one error type and the runner (errors), writing outputs whole
(outputs), every artifact path (paths), the project's code files a module runs (code_deps), and
metrics/summary.json while a run is under way (stale_summary).
"""
