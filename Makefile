# Two commands do all the set-up (see README): `make demo` and `make test`.
# Both create .venv with Python 3.12 and install the pinned requirements on first use.
SHELL := /bin/bash
PY := .venv/bin/python
# Project caches stay inside ignored folders of the repo; nothing is fetched from a hub at run time.
export HF_HOME := $(CURDIR)/.cache/huggingface
export HF_LEROBOT_HOME := $(CURDIR)/.cache/huggingface/lerobot
export AIRFLOW_HOME := $(CURDIR)/.cache/airflow
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export WANDB_DIR := $(CURDIR)/.cache/wandb
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

DEMO_DATA ?= data/so101_demo
DEMO_RUN ?= runs/demo
DEMO_ARGS ?= --k 5 --steps 2000 --eval-every 500 --save-every 500 --sim-eval-episodes 10 --parallel 2

.PHONY: setup demo test lint format clean-demo

setup:
	@scripts/bootstrap.sh

## The main job: record the simulator demo dataset (once) and run a 5-fold ACT cross-validation locally.
demo: setup
	$(PY) -m lerobot_kfold run --root $(DEMO_DATA) --record-demo 40 --output-dir $(DEMO_RUN) $(DEMO_ARGS)

## All tests, offline. Fails if no test ran.
test: setup
	$(PY) -m ruff check include tests
	$(PY) -m ruff format --check include tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check include tests
	$(PY) -m ruff format --check include tests

format: setup
	$(PY) -m ruff format include tests
	$(PY) -m ruff check --fix include tests

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_RUN)
