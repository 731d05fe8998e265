# One entry point per way of using the project. Every target sets up .venv itself when it is missing.
# `make help` lists the targets: it prints the `## ` comment written after each target below.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-fast typecheck lint format repro ui notebooks bench clean

help: ## this list (the text after `##` on each target's line in the Makefile)
	@echo "usage: make <target>   (variables: OVERRIDES='...' for repro, PYTEST_ARGS='...' for the tests, UI_PORT)"
	@awk 'BEGIN { FS = ":[^#]*## " } /^[a-z][a-z-]*:.*## / { printf "  make %-11s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

$(PY):
	python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev extra (torch first, pinned)

lint: $(STAMP) ## ruff check + ruff format --check
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: $(STAMP) ## ruff format + ruff check --fix (rewrites files)
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# Static types: mypy over the files listed in [tool.mypy] of pyproject.toml (unused ignores fail).
typecheck: $(STAMP) ## mypy over cnn/, stages/, benchmarks/ and the tests' conftest and helpers
	.venv/bin/mypy

# What CI runs (.ci/run): everything, the slow end-to-end tests included.
test: lint typecheck ## lint + type check + the whole test suite, slow tests included (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

# The inner loop: the same checks, the tests not marked slow, stopping at the first failure.
test-fast: lint typecheck ## lint + type check + the tests not marked slow, stop at the first failure
	$(PY) -m pytest -m "not slow" -x $(PYTEST_ARGS)

# The DVC pipeline. DVC's `repro` does not compose conf/ (only `dvc exp run` does), so compose params.yaml
# first, exactly as `dvc exp run` would; OVERRIDES='experiment=smoke optimizer.lr=3e-4' changes it. The
# stages run `python -m stages.X`: .venv/bin goes first on PATH. Ends with the NumPy-vs-PyTorch comparison.
OVERRIDES ?=
repro: $(STAMP) ## the DVC pipeline: fetch -> preprocess -> train x2 -> evaluate -> plot
	$(PY) -m cnn.pipeline compose $(OVERRIDES)
	PATH="$(CURDIR)/.venv/bin:$$PATH" DVC_NO_ANALYTICS=1 .venv/bin/dvc repro
	@echo
	@cat reports/comparison.md

# MLflow UI over the project's own runs (sqlite:///<repo>/mlflow.db), on the loopback interface only.
UI_PORT ?= 5000
ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 (UI_PORT) over the project's runs
	.venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(UI_PORT) --workers 1

# Jupyter Lab on the tutorials. jupyterlab is big, so it is not in the dev extra: the first run installs the
# `notebooks` extra. The notebooks read data/processed (01, 02) and the pipeline's runs (03): `make repro` first.
notebooks: $(STAMP) ## Jupyter Lab on the tutorial notebooks
	@test -x .venv/bin/jupyter-lab || $(PIP) install --quiet -e '.[notebooks]'
	@test -f data/processed/train.npz || echo "note: data/processed/ is empty: run 'make repro' first (03 needs its runs too)"
	.venv/bin/jupyter lab --notebook-dir=notebooks

bench: $(STAMP) ## the training-throughput and inference benchmarks
	$(PY) -m benchmarks.train_throughput
	$(PY) -m benchmarks.inference

clean: ## remove the tool caches and build outputs (not .venv, data or runs)
	rm -rf .pytest_cache .ruff_cache .mypy_cache build dist *.egg-info
