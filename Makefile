# The two set-up commands of the README:
#   make quickstart   install, then train CIARD on the embedded digits data (MLflow: ./mlflow.db)
#   make test         install, then run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test lint bench ui

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

quickstart: install
	$(BIN)/ablate train search_spaces/quickstart.yaml

test: install
	$(BIN)/python -m pytest
	$(BIN)/ruff check .

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/step_throughput.py

ui: install
	$(BIN)/ablate ui
