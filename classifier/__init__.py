"""The shared code of the stages and tools, a sub-package per job: params/ (typed params), data/ (sources,
decoding, shards, arrays, the preprocessing contract), augment/, models/, training/, evaluation/,
runtime/ (errors, outputs, paths, code deps, the DVC client). dvc.yaml lists, per stage, every file
its module imports (tools/dvc_yaml.py)."""
