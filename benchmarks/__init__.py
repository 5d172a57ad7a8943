# What a scratch git + DVC repo of the project needs besides data: every file dvc.yaml's stages read
# that no stage writes (tests/test_dvc_yaml.py holds it to dvc.yaml; the tests' projects copy it too).
PROJECT_FILES = ("stages", "classifier", "tools", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "data/digits",
                 "data/labels.csv", "models/pretrained")
