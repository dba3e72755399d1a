# The two set-up commands of the README:
#   make quickstart   install, then run the CIARD search on the embedded digits data
#                     (local Ray, MLflow store ./mlflow.db)
#   make test         install, then run the tests, ruff and the docs build (mkdocs --strict)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test lint docs bench bench-search ui

install: $(VENV)/.installed

# The postgres extra (psycopg) for tests/tracking/test_postgres.py, the robustbench extra for the zoo
# teachers' tests (tests/core/test_zoo.py). Makefile is a prerequisite too, so
# an existing .venv picks up a change of what is installed here.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,postgres,robustbench]"
	touch $@

quickstart: install
	$(BIN)/ablate search search_spaces/quickstart.yaml --fresh

test: install
	$(BIN)/python -m pytest
	$(BIN)/ruff check .
	$(BIN)/mkdocs build --strict --site-dir .site  # not --quiet: it hides the warnings --strict fails on

docs: install
	$(BIN)/mkdocs serve

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/step_throughput.py

bench-search: install
	$(BIN)/python benchmarks/search_concurrency.py

ui: install
	$(BIN)/ablate ui
