"""The shared code of the stages and tools, a sub-package per job: params/ (typed params), data/ (sources,
decoding, shards, arrays, the preprocessing contract), augment/, models/, training/, evaluation/,
runtime/ (errors, outputs, paths, code deps), experiments/ (the tools' shared code: the DVC client,
search spaces, tables, studies, the Ray cluster). dvc.yaml lists, per stage, every file
its module imports (tools/dvc_yaml.py)."""
