# qga-builder: `make build` runs the main job, `make test` the suite CI runs (`make test-all` all).
# Both do their own set-up (virtualenv, Docker engine, host tools) through scripts/setup.sh.

VENV   ?= .venv
PY     := $(VENV)/bin/python
RECIPE ?= recipes/linux-static.yaml
PYTEST_ARGS ?=

.PHONY: help setup build test test-all unit integration lint format schema clean bench

help:
	@echo "make build        build $(RECIPE) into out/ (sets everything up first)"
	@echo "make test         the test suite CI runs: every capability once, for real"
	@echo "make test-all     every test: also every series, architecture and guest kind"
	@echo "make unit         unit tests only (no Docker, no root once set up)"
	@echo "make lint         ruff (no Docker)"
	@echo "make schema       write the recipe JSON Schema to recipe.schema.json"
	@echo "make clean        remove leftovers of crashed runs and the out/ directory"
	@echo "make bench        run the benchmarks in bench/"

setup:
	scripts/setup.sh

build: setup
	$(PY) -m builder run $(RECIPE)

# `make test` (CI): every capability once, for real. `make test-all`: also every series,
# architecture and guest kind (the tests marked `full`; the README lists them).
test:
	scripts/setup.sh --test
	$(PY) -m pytest -m "not full" $(PYTEST_ARGS) tests

test-all:
	scripts/setup.sh --test
	$(PY) -m pytest $(PYTEST_ARGS) tests

unit:
	scripts/setup.sh --unit
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

integration:
	scripts/setup.sh --test
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration

lint:
	scripts/setup.sh --lint
	$(VENV)/bin/ruff check builder tests bench
	$(VENV)/bin/ruff format --check builder tests bench
	$(VENV)/bin/mypy  # strict: builder/config/ and the run context (pyproject's [tool.mypy])

format: setup
	$(VENV)/bin/ruff format builder tests bench
	$(VENV)/bin/ruff check --fix builder tests bench

schema: setup
	$(PY) -m builder schema > recipe.schema.json

clean: setup
	$(PY) -m builder clean
	rm -rf out

bench: setup
	$(VENV)/bin/pip install --quiet matplotlib
	$(PY) bench/run.py
