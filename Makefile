# The two commands a new user needs: `make serve` and `make test` (both create .venv when missing).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_ROOT ?= ../shared/data
# pytest-xdist processes for `make test`: two took the suite from 590 s to 413 s on a 2-core EPYC (0 runs it in one).
TEST_WORKERS ?= 2

.PHONY: serve test lint bench-train bench-soak checkpoints report clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamps re-install only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/dae-serve

# The suite drives Debian's chromium and docker-compose too: installed when missing (as root), else named.
test: $(VENV)/.installed-dev
	bash scripts/install-test-tools.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(TEST_WORKERS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy models training service bench

bench-train: $(VENV)/.installed-dev
	$(BIN)/python -m bench.train_benchmark --data-root $(DATA_ROOT)

# 10 minutes of wrk load at 32 connections against dae-serve: throughput, p99, errors and RSS over time.
bench-soak: $(VENV)/.installed-dev
	$(BIN)/python -m bench.soak

# Retrain every shipped model with the commands recorded in their cards (about 1 hour on 2 CPU cores).
checkpoints: $(VENV)/.installed
	DATA_ROOT=$(DATA_ROOT) bash checkpoints/train_all.sh

# The study (docs/report.md and docs/figures/): trains the cache models it lacks first (README, "The study").
$(VENV)/.installed-study: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[study]'
	touch $@ $(VENV)/.installed

report: $(VENV)/.installed-study
	$(BIN)/dae-report --data-root $(DATA_ROOT) $(REPORT_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
