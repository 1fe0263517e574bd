"""The retrain DAGs run the same task group and announce the new summary as an Asset event."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.dags.conftest import REPO, task_states

pytestmark = pytest.mark.slow


def test_data_triggered_retraining_publishes_the_summary_asset_event(
    airflow_db: Path, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    storage = tmp_path / "storage"
    shutil.copytree(demo_root, storage / "datasets" / "retrain_demo")
    monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(storage))
    monkeypatch.setenv("LEROBOT_KFOLD_RETRAIN_DATASET_ROOT", "datasets/retrain_demo")
    monkeypatch.setenv("LEROBOT_KFOLD_RETRAIN_K", "2")
    monkeypatch.setenv("LEROBOT_KFOLD_RETRAIN_STEPS", "2")
    bag = DagBag(dag_folder=str(REPO / "dags" / "lerobot_kfold_retrain.py"))
    dag = bag.get_dag("lerobot_kfold_retrain_on_data")
    assert "lerobot-kfold://datasets/retrain_demo" in str(dag.timetable.asset_condition)

    run = dag.test()

    assert run.state == "success", task_states(run)
    with create_session() as session:
        events = [
            e
            for e in session.query(AssetEvent).all()
            if e.asset.uri == "lerobot-kfold://summaries/retrain_demo" and e.source_run_id == run.run_id
        ]
        assert len(events) == 1
        extra = events[0].extra
    assert extra["totals"]["n_folds"] == 2 and extra["totals"]["n_succeeded"] == 2
    assert set(extra["metrics"]["val_l1"]) == {"mean", "std", "ci_low", "ci_high", "n"}
    assert Path(extra["summary_json"]).is_file()
    assert str(storage) in extra["summary_json"]
    # Backend local: CPU-seconds, no dollars.
    assert extra["cost"]["n_folds"] == 2 and extra["cost"]["total_cpu_s"] > 0
    assert extra["cost"]["total_usd"] is None
