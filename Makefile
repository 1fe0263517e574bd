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
# Airflow: this project's DAGs and plugins, SQLite in AIRFLOW_HOME, no examples.
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# Datasets and run outputs of the DAGs (the local stand-in for the Modal Volume).
export LEROBOT_KFOLD_STORAGE ?= $(CURDIR)/storage

LINT_PATHS := include plugins dags tests scripts bench
# The demos choose the small demo ACT explicitly: the default policy is lerobot's own ACT.
DEMO_CONF ?= {"k": 5, "policy_preset": "small", "steps": 2000, "eval_every": 500, "save_every": 500, "sim_eval_episodes": 10}
DEMO_DATA ?= data/so101_demo
DEMO_RUN ?= runs/demo
DEMO_ARGS ?= --k 5 --policy-preset small --steps 2000 --eval-every 500 --save-every 500 --sim-eval-episodes 10 --parallel 2
# The camera demo: a 96x128 front camera as video beside the state; the small ACT with its ResNet-18 from
# scratch (no weights download), 2 folds at a time on the CPU.
CAMERA_DATA ?= data/so101_camera_demo
CAMERA_RUN ?= runs/camera_demo
CAMERA_RECORD ?= --episodes 40 --cameras front --image-size 96x128
CAMERA_ARGS ?= --k 5 --policy-preset small --no-pretrained-backbone --steps 1000 --batch-size 8 --eval-every 500 --save-every 500 --sim-eval-episodes 10 --parallel 2

# Two candidates on the same 5 folds as demo-cli: the small preset, and lerobot's ACT recipe (VAE on,
# dropout 0.1) at the same size (one VAE encoder layer: lerobot's four made a fold 3.6x slower here).
# Chosen by closed-loop success.
COMPARE_RUN ?= runs/demo-compare
COMPARE_CANDIDATES ?= {"small": {}, "vae_dropout": {"policy_overrides": {"use_vae": true, "dropout": 0.1, "n_vae_encoder_layers": 1}}}
COMPARE_ARGS ?= $(DEMO_ARGS) --selection-metric sim_success_rate

.PHONY: setup airflow-db airflow airflow-celery demo demo-cli demo-compare demo-camera test lint format clean-demo

setup:
	@scripts/bootstrap.sh

airflow-db: setup
	@$(PY) -m airflow db migrate >/dev/null

## The main job: record the simulator demo dataset (once), run the lerobot_kfold_cv DAG with backend
## local (5 folds of a small ACT), print the summary.
demo: airflow-db
	$(PY) scripts/demo_dag.py --conf '$(DEMO_CONF)'

## A local Airflow (API server and UI, scheduler, DAG processor, triggerer; SQLite, LocalExecutor) on
## http://127.0.0.1:$(AIRFLOW_PORT) with this project's DAGs; prints the login. Ctrl-C stops it all.
AIRFLOW_PORT ?= 8080
airflow: setup
	$(PY) scripts/airflow_local.py --port $(AIRFLOW_PORT) --home $(AIRFLOW_HOME)

## The deployment of docker-compose.yaml without Docker: PostgreSQL and Redis (Debian's packages, installed
## when missing), Airflow with the CeleryExecutor (API server and UI, scheduler, DAG processor, triggerer,
## two Celery workers) configured from the compose file, on http://127.0.0.1:$(AIRFLOW_PORT); prints the
## login. Databases live in temporary folders; Ctrl-C stops it all. Outputs go to $(LEROBOT_KFOLD_STORAGE).
CELERY_PACKAGES := postgresql redis-server
airflow-celery: setup
	@scripts/ensure_system_packages.sh --for "the CeleryExecutor topology (make airflow-celery)" $(CELERY_PACKAGES)
	$(PY) scripts/airflow_celery.py --port $(AIRFLOW_PORT) --storage $(LEROBOT_KFOLD_STORAGE)

## The same cross-validation through the library's CLI alone (no Airflow), folds in parallel processes.
demo-cli: setup
	$(PY) -m lerobot_kfold run --root $(DEMO_DATA) --record-demo 40 --output-dir $(DEMO_RUN) $(DEMO_ARGS)

## Choosing between two candidates on the same folds: paired differences, verdicts, the choice.
demo-compare: setup
	$(PY) -m lerobot_kfold run --root $(DEMO_DATA) --record-demo 40 --output-dir $(COMPARE_RUN) $(COMPARE_ARGS) \
		--candidates '$(COMPARE_CANDIDATES)'

## The camera demo through the library's CLI: record the camera dataset (once), cross-validate it.
demo-camera: setup
	@[ -f $(CAMERA_DATA)/meta/info.json ] || $(PY) -m lerobot_kfold demo-dataset --root $(CAMERA_DATA) $(CAMERA_RECORD) >/dev/null
	$(PY) -m lerobot_kfold run --root $(CAMERA_DATA) --output-dir $(CAMERA_RUN) $(CAMERA_ARGS)

## All tests, offline. Fails if no test ran.
## System packages some tests need, installed when missing and possible (root or passwordless sudo).
GL_PACKAGES := libegl1 libegl-mesa0 libgl1 libosmesa6
test: setup
	@scripts/ensure_chromium.sh
	@scripts/ensure_system_packages.sh --for "headless camera rendering (MuJoCo EGL/OSMesa)" $(GL_PACKAGES)
	@scripts/ensure_system_packages.sh --for "the CeleryExecutor topology tests (tests/e2e_celery)" $(CELERY_PACKAGES)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)

format: setup
	$(PY) -m ruff format $(LINT_PATHS)
	$(PY) -m ruff check --fix $(LINT_PATHS)

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_RUN) $(COMPARE_RUN) $(CAMERA_DATA) $(CAMERA_RUN) storage/datasets/so101_demo storage/runs
