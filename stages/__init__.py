"""Pipeline stages: each module is one DVC stage, runnable as `python -m stages.<name>`."""
