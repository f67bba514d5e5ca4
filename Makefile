# Distillery: `make` sets everything up and reproduces the benchmark; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: all setup venv data repro test bench clean-outputs help

all: repro  ## set up (venv, requirements, package, dataset, git/dvc) and run `dvc repro`

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

venv: $(BIN)/.installed  ## virtualenv with the pinned requirements and the package (editable)

data: venv  ## make sure the embedded dataset is on disk (Debian package, else torchvision download)
	$(BIN)/python -m distillery.data.fetch

setup: venv data  ## venv + dataset + git/dvc repositories
	test -d .git || git init -q
	test -d .dvc || $(BIN)/dvc init -q

repro: setup  ## run the whole pipeline and print the results table
	$(BIN)/dvc repro
	@cat reports/results.md

test: venv  ## the test suite (no dataset or GPU needed)
	$(BIN)/python -m pytest tests

bench: venv  ## quick speed benchmarks (print figures; each script has --help for the full-size runs)
	$(BIN)/python benchmarks/train_throughput.py --preset cpu-small --threads 1 --repeats 1 --steps 10
	$(BIN)/python benchmarks/eval_scale.py --n 8000 --baseline-max-n 4000
