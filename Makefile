# Surge: `make demo` runs the main job on the embedded stack, `make test` the tests,
# `make unit` the fast ones (no nats-server, no models).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SURGE := $(VENV)/bin/surge
MODEL_DIR ?= .cache/surge/models
export SURGE_MODEL_DIR := $(abspath $(MODEL_DIR))

.PHONY: install models demo test lint typecheck unit bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

models: install
	$(SURGE) models fetch --dir $(MODEL_DIR)
	$(SURGE) models tune --dir $(MODEL_DIR) -f remove-bg

# Byte-compiled ahead: a worker started from zero then loads Surge's modules instead of
# compiling them (with PYTHONDONTWRITEBYTECODE set, every start would compile them all).
demo: models
	$(PY) -m compileall -q function scaler loadgen surge
	$(SURGE) demo --out demo-output

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy manifests/schemas/refresh.py

test: models lint typecheck
	$(VENV)/bin/pytest -q --durations=10

# The tests that need neither a nats-server nor the real models: seconds, offline.
unit: install
	$(VENV)/bin/pytest -q -m "not nats and not models"

bench: models
	$(PY) -m loadgen.bench

clean:
	rm -rf $(VENV) .cache demo-output reports .mypy_cache .ruff_cache .pytest_cache
