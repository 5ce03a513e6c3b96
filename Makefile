# segpipe: two commands on a fresh machine.
#   make run   - create .venv, install, generate the sample if missing, run the whole history, print segments
#   make test  - create .venv, install with dev extras, run the test suite
#   make ui    - Dagster webserver + daemon on http://127.0.0.1:3000
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PORT   ?= 3000
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test ui sample install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install -q -p $(BIN)/python -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install -q -p $(BIN)/python -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

sample: install
	$(BIN)/segpipe sample --if-missing

run: sample
	$(BIN)/segpipe run

ui: install
	$(BIN)/segpipe ui --port $(PORT)

test: install-dev
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

clean:
	rm -rf data/lake .dagster_home
