# make repro: set up .venv and run the whole pipeline on the default data (dvc repro)
# make test:  set up .venv and run the whole test suite (make test-fast: unit tests only;
#             make test-gpu: the CUDA tests, on a machine with a GPU)
# make generated: rewrite what is generated from the code (dvc.yaml's deps and params; docs/params.md)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements
# Stages run as `python -m stages.<name>`: put the venv's python first on PATH for DVC.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv repro test test-fast test-gpu bench generated restore clean

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing requirements.txt into $(VENV): a few minutes the first time (pip shows each package)"
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements.txt
	touch $@

repro: $(STAMP)
	$(BIN)/dvc repro

# Two workers, a test file each (pytest-xdist): a file's module fixtures (a trained project) are made
# once. (Three workers on two cores: no faster, 6:43 against 6:45; two keep both cores 99% busy.)
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# The edit loop: unit tests under 0.15 s each (no dvc, no subprocess), about 14 s on 2 cores (README.md says the same).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow and not gpu"

# The CUDA path (AMP, channels_last, compile, streaming, no per-step sync, NCCL): skipped without a GPU.
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -m gpu

bench: $(STAMP)
	$(BIN)/python -m benchmarks.augment
	$(BIN)/python -m benchmarks.train
	$(BIN)/python -m benchmarks.parity
	$(BIN)/python -m benchmarks.scale
	$(BIN)/python -m benchmarks.cpu_kernels
	$(BIN)/python -m benchmarks.threads
	$(BIN)/python -m benchmarks.lr_find
	$(BIN)/python -m benchmarks.policy
	$(BIN)/python -m benchmarks.resume
	$(BIN)/python -m benchmarks.tune
	$(BIN)/python -m benchmarks.cluster
	$(BIN)/python -m benchmarks.label_noise
	$(BIN)/python -m benchmarks.dvc_yaml

generated: $(STAMP)
	$(BIN)/python -m tools.dvc_yaml
	$(BIN)/python -m tools.params_doc

# Back to the last commit's params, dvc.lock and outputs after a failed or unwanted experiment
# (docs/interrupted-runs.md). `git rm --cached` first: after a failed `dvc exp run`, git's index can
# call a file that DVC rewrote in the same second with the same size unchanged, and checkout skips it.
restore: $(STAMP)
	git rm -rq --cached --ignore-unmatch params.yaml dvc.lock metrics plots && git checkout HEAD -- params.yaml dvc.lock metrics plots && (dvc checkout --force 2>/dev/null || (echo "restore: outputs of the last commit are not in DVC's cache: dvc repro makes them" && dvc repro))

clean:
	rm -rf $(VENV)
