# One entry point per way of using the project. Every target sets up .venv itself when it is missing.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
PYTEST_ARGS ?=

.PHONY: help install test lint format params repro exps ui notebooks bench clean

help:
	@echo "make test       lint + the whole test suite (creates .venv on first use)"
	@echo "make repro      run the DVC pipeline: fetch -> preprocess -> train x2 -> evaluate -> plot"
	@echo "make ui         MLflow UI on http://127.0.0.1:5000 over the project's runs"
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

repro: params ## the DVC pipeline: compose -> fetch -> preprocess -> train x2 -> evaluate -> plot -> record; dvc push
	$(DVC) repro
	$(DVC) push --run-cache
	@echo
	@cat reports/comparison.md

# `dvc exp show` lists every param, dependency and metric (some 150 columns): these fit 120 characters.
EXPS_KEEP := Experiment|(numpy|torch)\.test_accuracy|model\.name|optimizer\.(name|lr)
exps: $(STAMP) ## the experiments, main columns only (dvc exp show --drop '.*' --keep ...)
	@$(DVC) exp show --no-pager --drop '.*' --keep '$(EXPS_KEEP)'

# MLflow UI over the project's own runs (sqlite:///<repo>/mlflow.db), on the loopback interface only.
UI_PORT ?= 5000
ui: $(STAMP)
	.venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(UI_PORT) --workers 1

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
