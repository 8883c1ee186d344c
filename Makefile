# Two commands: `make run` and `make test`. Both create .venv and install what is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

# Python 3.11 or newer: a .venv of an older one (made before PYTHON= was given) is made again.
NEW_ENOUGH := -c 'import sys; sys.exit(sys.version_info < (3, 11))'
$(STAMP): pyproject.toml
	@test -x $(BIN)/python && $(BIN)/python $(NEW_ENOUGH) || $(PYTHON) $(NEW_ENOUGH) || { \
	  echo "$(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); this needs 3.11 or newer: make $(MAKECMDGOALS) PYTHON=python3.11" >&2; exit 1; }
	test -x $(BIN)/python && $(BIN)/python $(NEW_ENOUGH) || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/shoptet-worker up --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
