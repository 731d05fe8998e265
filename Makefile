# One entry point per way of using the project. Every target sets up .venv itself when it is missing.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
PYTEST_ARGS ?=

.PHONY: help install test lint format repro ui serve notebooks bench clean

help:
	@echo "make test       lint + the whole test suite (creates .venv on first use)"
	@echo "make repro      run the DVC pipeline: fetch -> preprocess -> train x2 -> evaluate -> plot"
	@echo "make ui         MLflow UI on http://127.0.0.1:5000 over the project's runs"
	@echo "make serve      the champion model (cnn-numpy) as a REST endpoint on http://127.0.0.1:5001"
	@echo "make notebooks  Jupyter Lab on the tutorial notebooks"
	@echo "make bench      the training-throughput and inference benchmarks"

$(PY):
	python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: $(STAMP)
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The DVC pipeline. DVC's `repro` does not compose conf/ (only `dvc exp run` does), so compose params.yaml
# first, exactly as `dvc exp run` would; OVERRIDES='experiment=smoke optimizer.lr=3e-4' changes it. The
# stages run `python -m stages.X`: .venv/bin goes first on PATH. Ends with the NumPy-vs-PyTorch comparison.
OVERRIDES ?=
repro: $(STAMP)
	$(PY) -m cnn.pipeline compose $(OVERRIDES)
	PATH="$(CURDIR)/.venv/bin:$$PATH" DVC_NO_ANALYTICS=1 .venv/bin/dvc repro
	@echo
	@cat reports/comparison.md

# MLflow UI over the project's own runs (sqlite:///<repo>/mlflow.db), on the loopback interface only. MLflow 3.17
# opens experiments on its GenAI screens: the address printed first opens cnn-mnist on its training runs.
UI_PORT ?= 5000
ui: $(STAMP)
	@$(PY) -c "from cnn.pipeline.tracking import experiment_url; print('open', experiment_url('http://127.0.0.1:$(UI_PORT)', 'sqlite:///$(CURDIR)/mlflow.db'))"
	.venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(UI_PORT) --workers 1

# The registry's champion as a REST endpoint on the loopback interface: POST raw images to /invocations, e.g.
#   curl -H 'Content-Type: application/json' -d '{"inputs": [[[0, 0, ...], ...]]}' 127.0.0.1:5001/invocations
# --env-manager local: the project's .venv (MLflow's default builds a fresh environment, which needs pyenv and
# the network); .venv/bin first on PATH because MLflow starts the server as `uvicorn`.
# SERVE_MODEL=cnn-torch serves the twin; MLFLOW_TRACKING_URI (a team server) replaces the repo's mlflow.db.
SERVE_MODEL ?= cnn-numpy
SERVE_PORT ?= 5001
serve: $(STAMP) ## serve models:/$(SERVE_MODEL)@champion on http://127.0.0.1:$(SERVE_PORT)/invocations
	PATH="$(CURDIR)/.venv/bin:$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
	    .venv/bin/mlflow models serve -m "models:/$(SERVE_MODEL)@champion" --env-manager local \
	    --host 127.0.0.1 --port $(SERVE_PORT)

# Jupyter Lab on the tutorials. jupyterlab is big, so it is not in the dev extra: the first run installs the
# `notebooks` extra. The notebooks read data/processed (01, 02) and the pipeline's runs (03): `make repro` first.
notebooks: $(STAMP)
	@test -x .venv/bin/jupyter-lab || $(PIP) install --quiet -e '.[notebooks]'
	@test -f data/processed/train.npz || echo "note: data/processed/ is empty: run 'make repro' first (03 needs its runs too)"
	.venv/bin/jupyter lab --notebook-dir=notebooks

bench: $(STAMP)
	$(PY) -m benchmarks.train_throughput
	$(PY) -m benchmarks.inference

clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
