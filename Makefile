# Every target installs what it needs into .venv first, so a fresh machine needs only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 50051
DATA_DIR ?= ./data

.PHONY: install run test test-slow lint typecheck check-generated generate bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/bandit-server serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: install check-generated lint typecheck
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check bandit_server tests simulations
	$(BIN)/ruff format --check bandit_server tests simulations

typecheck: install
	$(BIN)/mypy

generate: install
	PYTHON=$(BIN)/python proto/generate.sh

# Fails when the checked-in stubs differ from what the proto files generate.
check-generated: install
	@tmp=$$(mktemp -d) && PYTHON=$(BIN)/python proto/generate.sh $$tmp/generated \
	  && diff -r -x __pycache__ $$tmp/generated bandit_server/rpc/generated \
	  && rm -rf $$tmp && echo "generated stubs are up to date"

bench: install
	$(BIN)/python -m bandit_server.bench.all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
