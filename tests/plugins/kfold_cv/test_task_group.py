"""The task-group factory: the k-fold workflow inside any DAG, with settings as constants."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG, Asset

from kfold_cv import kfold_cross_validation

DATA = {"dataset_root": "datasets/x"}


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))


def test_embeds_in_an_existing_dag_between_other_tasks() -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator

    with _dag("mlops") as dag:
        before = EmptyOperator(task_id="collect_data")
        group = kfold_cross_validation("cv", settings={"dataset_root": "/data/x", "k": 3, "backend": "modal"})
        after = EmptyOperator(task_id="register_model")
        before >> group >> after

    assert {"cv.validate", "cv.prepare_dataset", "cv.plan", "cv.train_fold", "cv.aggregate"} <= set(
        dag.task_ids
    )
    assert dag.get_task("cv.validate").upstream_task_ids == {"collect_data"}
    # The group's last task: its XCom is the run's summary, whether or not the run refits.
    assert dag.get_task("register_model").upstream_task_ids == {"cv.summary"}


def test_two_groups_in_one_dag_read_their_own_validate_task() -> None:
    with _dag("two") as dag:
        kfold_cross_validation("cv_a", settings={**DATA, "k": 2})
        kfold_cross_validation("cv_b", settings={**DATA, "k": 3})
    assert "cv_a.validate" in dag.get_task("cv_a.train_fold").partial_kwargs["backend"]
    assert "cv_b.validate" in dag.get_task("cv_b.train_fold").partial_kwargs["backend"]


def test_bad_constants_fail_when_the_dag_is_parsed() -> None:
    with _dag("bad"), pytest.raises(ValueError, match="k must be at least 2"):
        kfold_cross_validation(settings={**DATA, "k": 1})
    with _dag("bad2"), pytest.raises(ValueError, match="unknown setting"):
        kfold_cross_validation(settings={**DATA, "folds": 3})
    with _dag("bad3"), pytest.raises(ValueError, match="set dataset_root"):
        kfold_cross_validation(settings={"k": 3})


def test_caps_parallel_folds_per_run_and_publishes_the_summary_asset() -> None:
    asset = Asset(name="summary", uri="lerobot-kfold://summaries/x")
    with _dag("capped") as dag:
        kfold_cross_validation(settings=DATA, max_parallel_folds=3, summary_asset=asset)
    assert dag.get_task("kfold_cv.train_fold").partial_kwargs["max_active_tis_per_dagrun"] == 3
    assert dag.get_task("kfold_cv.summary").outlets == [asset]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(
            {"summary_asset": "lerobot-kfold://x"}, "summary_asset must be an airflow.sdk.Asset", id="asset"
        ),
        pytest.param({"fold_retries": -1}, "fold_retries must be an integer >= 0", id="retries"),
        pytest.param({"deferrable": "no"}, "deferrable must be True or False", id="deferrable"),
        pytest.param(
            {"max_parallel_folds": 2.5}, "max_parallel_folds must be an integer >= 1", id="parallel"
        ),
        pytest.param(
            {"max_parallel_folds": 0}, "max_parallel_folds must be an integer >= 1", id="parallel-0"
        ),
        pytest.param({"poll_interval": 0}, "poll_interval must be a number", id="poll"),
        pytest.param({"app_name": ""}, "app_name must be a non-empty string", id="app"),
        pytest.param({"settings": [("k", 3)]}, "settings must be a dict", id="settings"),
    ],
)
def test_bad_factory_arguments_fail_when_the_dag_is_parsed(arguments: dict, message: str) -> None:
    with _dag("bad-arguments"), pytest.raises(ValueError, match=message):
        kfold_cross_validation(**{"settings": DATA, **arguments})
