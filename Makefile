# memstore: `make demo` and `make test` are all a new user needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-memstore
PYTEST_ARGS ?=

.PHONY: demo test test-all test-mpi lint format clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## a short producer/consumer run on a local 2-shard store
	$(PY) examples/quickstart.py

test: $(STAMP)  ## the default suite (excludes slow and gpu tests)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)  ## everything, slow tests included (gpu tests skip without CUDA)
	$(PY) -m pytest -q -m "" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check memstore tests benchmarks examples
	$(VENV)/bin/ruff format --check memstore tests benchmarks examples

format: $(STAMP)
	$(VENV)/bin/ruff check --fix memstore tests benchmarks examples
	$(VENV)/bin/ruff format memstore tests benchmarks examples

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
