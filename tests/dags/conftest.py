"""Helpers for DAG tests: load this project's DAGs and read what a ``dag.test()`` run left in XCom."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dagbag(airflow_db: Path):
    """This project's DAGs, parsed afresh for every test.

    Not shared between tests: under ``dag.test()`` (Airflow 3.3) a run's conf is written into the DAG's
    own ``Param`` objects (``process_params`` copies the Params by reference, then resolves the conf into
    them), so a second ``dag.test()`` of the same DAG object inherits the first run's conf. A task process
    of a real Airflow parses the DAG file anew and is not affected.
    """
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def xcom_values(dag_run, task_id: str, key: str = "return_value") -> dict[int, Any]:
    """``{map_index: value}`` of one task's XCom in a finished run (map index -1 when not mapped)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key=key)
        ).all()
        return {row.map_index: XComModel.deserialize_value(row) for row in rows}


def task_states(dag_run) -> dict[tuple[str, int], str]:
    """``{(task_id, map_index): state}`` of every task instance of a run."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            (ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state))
            for ti in dag_run.get_task_instances(session=session)
        }


def rendered_map_indexes(dag_run, task_id: str) -> dict[int, str | None]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            ti.map_index: ti.rendered_map_index
            for ti in dag_run.get_task_instances(session=session)
            if ti.task_id == task_id
        }
