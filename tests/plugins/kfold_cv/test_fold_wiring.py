"""How the task group wires its folds for progress, turns within a run and a GPU pool across runs."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG

from kfold_cv import kfold_cross_validation
from kfold_cv.task_group import headline
from lerobot_kfold.progress import PROGRESS_DICT

DATA = {"dataset_root": "datasets/x"}


def _folds(**arguments):
    with DAG(dag_id="wired", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        kfold_cross_validation(settings=DATA, **arguments)
    return dag.get_task("kfold_cv.train_fold").partial_kwargs


def test_folds_take_turns_within_the_cap_and_publish_progress_under_their_folder() -> None:
    folds = _folds(max_parallel_folds=4, poll_interval=30.0)
    assert _folds(poll_interval=1.0)["turn_wait_s"] == 15.0, "never sooner than Airflow can take"

    assert folds["max_active_tis_per_dagrun"] == 4, "the deployment's hard cap"
    assert "key='max_parallel_folds'" in folds["run_concurrency"], "the run's own value, from validate"
    assert folds["turn_wait_s"] == 30.0
    assert folds["progress_dict"] == PROGRESS_DICT
    assert folds["progress_key"] == "{{ task.function_kwargs['config']['output_dir'] }}"
    assert "key='stall_after_s'" in folds["stall_after_s"]
    assert folds.get("pool") in (None, "default_pool")


def test_a_gpu_pool_caps_folds_across_runs() -> None:
    assert _folds(gpu_pool="modal_gpus")["pool"] == "modal_gpus"


@pytest.mark.parametrize("pool", ["", "  ", 3])
def test_a_bad_pool_fails_when_the_dag_is_parsed(pool) -> None:
    with pytest.raises(ValueError, match="gpu_pool must be the name of an Airflow pool"):
        _folds(gpu_pool=pool)


def test_the_summary_assets_extra_carries_the_cost() -> None:
    cost = {"n_folds": 2, "total_usd": 1.25, "prices_as_of": "2026-05-07"}

    assert headline({"metrics": {}, "cost": cost})["cost"] == cost
