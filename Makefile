# The README's commands. Each target sets up what it needs (a virtual environment
# in .venv with this package and its dev tools), so a fresh clone needs only
# Python 3.10+ and make.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck format ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## fit on scikit-learn's breast-cancer data, score a file, log to MLflow
	$(PY) pipelines/demo.py

test: $(STAMP)  ## lint, then the test suite
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)  ## mypy on the package (settings in pyproject.toml)
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

ui: $(STAMP)  ## MLflow UI on this project's store, http://127.0.0.1:5000
	$(VENV)/bin/anomaly-vae ui

clean:
	rm -rf demo mlruns/mlflow.db mlruns/artifacts mlruns/models
