# The two set-up commands of the README:
#   make quickstart   install, then run the CIARD search on the embedded digits data
#                     (local Ray, MLflow store ./mlflow.db)
#   make test         install, then run the tests, ruff and the docs build (mkdocs --strict)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install fashion-mnist quickstart test lint docs bench bench-search ui

install: $(VENV)/.installed

# The postgres extra (psycopg) for tests/tracking/test_postgres.py, the robustbench extra for the zoo
# teachers' tests (tests/core/test_zoo.py), the browser extra (selenium) for
# tests/tracking/test_browser.py. Makefile is a prerequisite too, so
# an existing .venv picks up a change of what is installed here.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,postgres,robustbench,browser]"
	@$(MAKE) --no-print-directory fashion-mnist
	touch $@

# Fashion-MNIST's idx files (data.name: fashion_mnist) from Debian's package, where apt-get
# can install it (as root, or with sudo that asks no password); otherwise a note on how. The
# default search runs on the bundled digits and needs none of this.
FMNIST_PKG := dataset-fashion-mnist
fashion-mnist:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then exit 0; fi; \
	as_root=""; [ "$$(id -u)" = 0 ] || as_root="sudo -n"; \
	if command -v apt-get >/dev/null && $$as_root true 2>/dev/null; then \
	    echo "installing Fashion-MNIST: apt-get install $(FMNIST_PKG)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    $$as_root apt-get install -y -qq --no-install-recommends $(FMNIST_PKG) >/dev/null 2>&1 || \
	    { $$as_root apt-get update -qq >/dev/null 2>&1 && \
	      $$as_root apt-get install -y -qq --no-install-recommends $(FMNIST_PKG) >/dev/null 2>&1; } || \
	    echo "note: apt-get install $(FMNIST_PKG) failed; Fashion-MNIST needs it, or its idx files in data/FashionMNIST/raw"; \
	else \
	    echo "note: for Fashion-MNIST, install Debian's $(FMNIST_PKG) (sudo apt-get install $(FMNIST_PKG)), put its idx files in data/FashionMNIST/raw, or set data.download=true on an online machine"; \
	fi

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
