"""Every DAG file imports cleanly, and the trigger form rejects bad confs naming the parameter."""

from __future__ import annotations

import copy

import pytest

from tests.dags.conftest import REPO

EXPECTED_DAGS = {"lerobot_kfold_cv", "lerobot_kfold_retrain_weekly", "lerobot_kfold_retrain_on_data"}
GROUP_TASKS = {
    "kfold_cv.validate",
    "kfold_cv.prepare_dataset",
    "kfold_cv.plan",
    "kfold_cv.train_fold",
    "kfold_cv.aggregate",
    "kfold_cv.plan_refit",
    "kfold_cv.refit",
    "kfold_cv.final_summary",
    "kfold_cv.summary",
}


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED_DAGS
    assert sorted(p.name for p in (REPO / "dags").glob("*.py")) == [
        "lerobot_kfold_cv.py",
        "lerobot_kfold_retrain.py",
    ]


def test_manual_dag_has_the_kfold_group_with_a_mapped_fold_task(dagbag) -> None:
    dag = dagbag.get_dag("lerobot_kfold_cv")
    assert set(dag.task_ids) == GROUP_TASKS
    assert not dag.timetable.can_be_scheduled, "manual trigger only"
    train = dag.get_task("kfold_cv.train_fold")
    assert type(train).__name__ == "MappedOperator"
    assert train.partial_kwargs["max_active_tis_per_dagrun"] >= 1
    assert dag.get_task("kfold_cv.aggregate").trigger_rule == "all_done_min_one_success"


def test_retrain_dags_run_on_a_schedule_and_on_dataset_events_and_publish_the_summary(dagbag) -> None:
    weekly = dagbag.get_dag("lerobot_kfold_retrain_weekly")
    on_data = dagbag.get_dag("lerobot_kfold_retrain_on_data")
    assert weekly.timetable.expression == "0 3 * * 1"
    assert "lerobot-kfold://datasets/so101_demo" in str(on_data.timetable.asset_condition)
    for dag in (weekly, on_data):
        publish = dag.get_task("kfold_cv.summary")
        assert [asset.uri for asset in publish.outlets] == ["lerobot-kfold://summaries/so101_demo"]
        assert publish.upstream_task_ids == {"kfold_cv.aggregate", "kfold_cv.final_summary"}


class TestTriggerFormValidation:
    """The Params' JSON schema rejects a bad conf before a run exists (the REST API answers 400)."""

    @pytest.mark.parametrize(
        ("conf", "param"),
        [
            pytest.param({"k": 1}, "k", id="k-below-2"),
            pytest.param({"k": 5000}, "k", id="k-above-max-map-length"),
            pytest.param({"gpu": "GTX1080"}, "gpu", id="unknown-gpu"),
            pytest.param({"steps": -5}, "steps", id="negative-steps"),
            pytest.param({"steps": "many"}, "steps", id="steps-not-a-number"),
            pytest.param({"backend": "kubernetes"}, "backend", id="unknown-backend"),
            pytest.param({"holdout_fraction": 0.95}, "holdout_fraction", id="holdout-too-large"),
            pytest.param({"learning_rate": 0}, "learning_rate", id="zero-learning-rate"),
            pytest.param({"dataset_repo_id": "not a repo"}, "dataset_repo_id", id="bad-repo-id"),
            pytest.param({"timeout_s": 10}, "timeout_s", id="timeout-too-short"),
        ],
    )
    def test_rejects(self, dagbag, conf: dict, param: str) -> None:
        from airflow.sdk.exceptions import ParamValidationError

        params = copy.deepcopy(dagbag.get_dag("lerobot_kfold_cv").params)
        with pytest.raises(ParamValidationError, match=param):
            params.update(conf)
            params.validate()

    def test_accepts_the_defaults_and_a_modal_conf(self, dagbag) -> None:
        params = copy.deepcopy(dagbag.get_dag("lerobot_kfold_cv").params)
        assert params.validate()["backend"] == "local"
        params.update({"backend": "modal", "gpu": "H100", "k": 10, "dataset_repo_id": "lerobot/pusht"})
        assert params.validate()["gpu"] == "H100"
