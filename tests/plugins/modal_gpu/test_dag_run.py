"""A DAG with one ``ModalGPUOperator`` task, run by ``dag.test()``: spawn, defer, trigger, resume, XCom.

Real Airflow 3.3 (task runner, in-process execution API, inline trigger, metadata database) and the real
modal client against the fake control plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modal_gpu.operators import ModalGPUOperator
from modal_gpu.triggers import ModalFunctionCallTrigger
from tests.plugins.modal_gpu.support import APP, event_for

DAG_ID = "modal_gpu_single_task_test"
URL_TEMPLATE = "https://modal.example/calls/{call_id}"


def register(dag: Any) -> None:
    """Write the in-test DAG to the metadata database as the DAG processor would.

    ``dag.test()`` creates its run from the serialized DAG; a DAG built in a test is in no bundle, so it
    is serialized here under the ``dags-folder`` bundle. The bundle's row is written first: in a fresh
    metadata database (this test run alone) nothing else has written it yet.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def xcoms(dag_run: Any, task_id: str) -> dict[str, Any]:
    """``{key: value}`` of one task's XComs in a finished run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id)
        )
        return {row.key: XComModel.deserialize_value(row) for row in rows}


@pytest.mark.usefixtures("airflow_db", "modal_connection")
def test_dag_with_one_modal_gpu_task_runs_through_the_trigger(plane, monkeypatch, tmp_path: Path):
    import airflow.settings
    from airflow.sdk import DAG

    triggered: list[str] = []
    real_run = ModalFunctionCallTrigger.run

    def recording_run(self: ModalFunctionCallTrigger):
        triggered.append(self.call_id)
        return real_run(self)

    monkeypatch.setattr(ModalFunctionCallTrigger, "run", recording_run)
    # dag.test() re-parses the whole dags-folder bundle first; only the DAG below matters here.
    monkeypatch.setattr(airflow.settings, "DAGS_FOLDER", str(tmp_path))

    with DAG(DAG_ID, schedule=None, catchup=False) as dag:
        ModalGPUOperator(
            task_id="train_fold",
            app_name=APP,
            function_name="sleep",
            function_kwargs={"seconds": 0.5, "value": {"fold": 0, "val_l1": 0.42}},
            gpu="H100",
            timeout=600,
            poll_interval=0.2,
            dashboard_url_template=URL_TEMPLATE,
        )
    register(dag)
    spawned_before = len(plane.spawns())

    dag_run = dag.test()

    assert dag_run.state == "success"
    pushed = xcoms(dag_run, "train_fold")
    call_id = pushed["modal_call_id"]
    assert pushed["return_value"] == {"fold": 0, "val_l1": 0.42}
    assert pushed["_link_ModalCallLink"] == URL_TEMPLATE.format(call_id=call_id)
    assert triggered == [call_id]  # deferred: the trigger waited on the call, not the worker
    assert len(plane.spawns()) == spawned_before + 1  # resuming runs execute_complete, not a new spawn
    spawn = event_for(plane, "spawn", call_id)
    assert (spawn["app"], spawn["function"], spawn["gpu"], spawn["timeout"]) == (APP, "sleep", "H100", 600)
