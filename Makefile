# segpipe: two commands on a fresh machine.
#   make run   - create .venv, install, generate the sample if missing, run the whole history, print segments
#   make test  - create .venv, install with dev extras, run the test suite
#   make ui    - Dagster webserver + daemon on http://127.0.0.1:3000
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PORT   ?= 3000
# Azurite (Microsoft's Azure Storage emulator, from the npm registry) for the Azure lake tests;
# installed into $(VENV)/azurite, so it goes and comes back with the virtualenv.
AZURITE_VERSION = 3.35.0
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

# Without npm the Azure lake tests skip (and fail under CI=true; .ci/run installs nodejs and npm).
$(VENV)/.installed-azurite-$(AZURITE_VERSION): | $(BIN)/python
	@if command -v npm >/dev/null 2>&1; then \
	  echo "npm install azurite@$(AZURITE_VERSION) into $(VENV)/azurite"; \
	  npm install --prefix $(VENV)/azurite --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION) && touch $@; \
	else \
	  echo "npm not found: Azurite not installed, the Azure lake tests will skip (apt-get install nodejs npm)"; \
	fi

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev $(VENV)/.installed-azurite-$(AZURITE_VERSION)

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
