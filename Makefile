# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# The first call creates .venv and installs the project into it (editable) with the extra dev: the tests'
# tools and what ems study needs (the core install, `pip install .`, is what a gateway runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ems demo

check: $(STAMP)
	$(BIN)/ems check configs/*.yaml

lint: $(STAMP)
	$(BIN)/ruff check ems models adapters tests bench configs

test: lint
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
