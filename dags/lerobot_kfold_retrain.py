"""Retraining: the same k-fold run on a schedule, and whenever the dataset changes.

- ``lerobot_kfold_retrain_weekly`` runs every Monday at 03:00 (cron ``LEROBOT_KFOLD_RETRAIN_CRON``).
- ``lerobot_kfold_retrain_on_data`` runs when the dataset Asset gets an event: whatever appends
  episodes (a recording job, a DAG, or ``POST /api/v2/assets/events``) announces it, and the folds are
  re-planned on the new episodes.

Both update the summary Asset when done, so downstream DAGs (a model registry, a deployment gate) can
be scheduled on it and read the headline numbers from the event's extra.
Settings: any setting as a ``LEROBOT_KFOLD_RETRAIN_<NAME>`` environment variable, else the local demo.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Asset

from kfold_cv import kfold_cross_validation
from kfold_cv.settings import settings_from_environment

# Any setting as LEROBOT_KFOLD_RETRAIN_<NAME> (e.g. _K=5, _STEPS=4000, _BACKEND=modal); the demo otherwise.
SETTINGS = settings_from_environment("LEROBOT_KFOLD_RETRAIN_")
if not SETTINGS.get("dataset_root") and not SETTINGS.get("dataset_repo_id"):
    SETTINGS["dataset_root"] = "datasets/so101_demo"
DATASET_NAME = (SETTINGS.get("dataset_root") or SETTINGS["dataset_repo_id"]).rstrip("/").rsplit("/", 1)[-1]
MAX_PARALLEL = int(os.environ.get("LEROBOT_KFOLD_MAX_PARALLEL_FOLDS", "2"))

dataset_asset = Asset(name=f"lerobot_dataset_{DATASET_NAME}", uri=f"lerobot-kfold://datasets/{DATASET_NAME}")
summary_asset = Asset(
    name=f"lerobot_kfold_summary_{DATASET_NAME}", uri=f"lerobot-kfold://summaries/{DATASET_NAME}"
)

# One DAG per way of starting a retrain; the same task group in both.
SCHEDULES = {
    "lerobot_kfold_retrain_weekly": os.environ.get("LEROBOT_KFOLD_RETRAIN_CRON", "0 3 * * 1"),
    "lerobot_kfold_retrain_on_data": [dataset_asset],
}

for dag_id, schedule in SCHEDULES.items():
    with DAG(
        dag_id=dag_id,
        schedule=schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["lerobot", "k-fold", "retrain"],
        doc_md=__doc__,
    ):
        kfold_cross_validation(
            "kfold_cv",
            settings=SETTINGS,
            max_parallel_folds=MAX_PARALLEL,
            summary_asset=summary_asset,
            gpu_pool=os.environ.get("LEROBOT_KFOLD_GPU_POOL") or None,
        )
