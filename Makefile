# One entry point per way of using the project. Every target sets up .venv itself when it is missing.
# `make help` lists the targets: it prints the `## ` comment written after each target below.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-fast typecheck lint format params repro exps ui serve notebooks bench clean

help: ## this list (the text after `##` on each target's line in the Makefile)
	@echo "usage: make <target>   (variables: OVERRIDES='...' or bare key=value for params/repro, PYTEST_ARGS='...', UI_PORT,"
	@echo "                        SERVE_MODEL=cnn-numpy|cnn-torch and SERVE_PORT for serve)"
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

# The DVC pipeline. Compose params.yaml from conf/ with the Hydra overrides given, exactly as `dvc exp run`
# would (the dvc.yaml `compose` stage keeps them; plain `dvc repro` composes again only after conf/
# changed). Overrides, quoted or not: OVERRIDES='experiment=smoke optimizer.lr=3e-4', or
# `make repro experiment=smoke optimizer.lr=3e-4` -- make takes each unquoted key=value for a variable of
# its own and lists it in MAKEOVERRIDES; every one not in capitals (PY, OVERRIDES, ...) is an override.
# The stages run `python -m stages.X`: .venv/bin goes first on PATH. Ends with the outputs pushed to the
# default DVC remote (.dvc/config) and the NumPy-vs-PyTorch comparison.
OVERRIDES ?=
DVC := PATH="$(CURDIR)/.venv/bin:$$PATH" DVC_NO_ANALYTICS=1 .venv/bin/dvc
params: $(STAMP) ## compose params.yaml from conf/ with the overrides given (quoted in OVERRIDES or not)
	@set -- $(OVERRIDES); for arg in $(MAKEOVERRIDES); do \
	  case "$$arg" in [A-Z]*=*) ;; *) set -- "$$@" "$$arg" ;; esac; done; \
	echo "$(PY) -m cnn.pipeline compose $$*"; $(PY) -m cnn.pipeline compose "$$@"

repro: params ## the DVC pipeline (dvc repro: fetch -> preprocess -> train x2 -> evaluate -> plot), then dvc push
	$(DVC) repro
	$(DVC) push --run-cache
	@echo
	@cat reports/comparison.md

# `dvc exp show` lists every param, dependency and metric (some 150 columns): these fit 120 characters.
EXPS_KEEP := Experiment|(numpy|torch)\.test_accuracy|model\.name|optimizer\.(name|lr)
exps: $(STAMP) ## the experiments, main columns only (dvc exp show --drop '.*' --keep ...)
	@$(DVC) exp show --no-pager --drop '.*' --keep '$(EXPS_KEEP)'

# MLflow UI over the project's own runs (sqlite:///<repo>/mlflow.db), on the loopback interface only. MLflow 3.17
# opens experiments on its GenAI screens: the address printed first opens cnn-mnist on its training runs.
UI_PORT ?= 5000
ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 (UI_PORT) over the project's runs
	@$(PY) -c "from cnn.pipeline.tracking import experiment_url; print('open', experiment_url('http://127.0.0.1:$(UI_PORT)', 'sqlite:///$(CURDIR)/mlflow.db'))"
	.venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(UI_PORT) --workers 1

# The registry's champion as a REST endpoint on the loopback interface: POST raw images to /invocations, e.g.
#   curl -H 'Content-Type: application/json' -d '{"inputs": [[[0, 0, ...], ...]]}' 127.0.0.1:5001/invocations
# --env-manager local: the project's .venv (MLflow's default builds a fresh environment, which needs pyenv and
# the network); .venv/bin first on PATH because MLflow starts the server as `uvicorn`.
# MLFLOW_TRACKING_URI, when set (a team server), replaces the repo's mlflow.db.
SERVE_MODEL ?= cnn-numpy
SERVE_PORT ?= 5001
serve: $(STAMP) ## the registry's champion (SERVE_MODEL=cnn-numpy) as a REST endpoint on http://127.0.0.1:5001
	PATH="$(CURDIR)/.venv/bin:$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
	    .venv/bin/mlflow models serve -m "models:/$(SERVE_MODEL)@champion" --env-manager local \
	    --host 127.0.0.1 --port $(SERVE_PORT)

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
