"""The end-to-end stack of ``tests/e2e`` on the deployment's topology: ``docker-compose.yaml`` run natively.

``scripts/airflow_celery.py`` starts PostgreSQL and Redis (Debian's packages; ``make test`` installs them)
and Airflow with the CeleryExecutor (API server, scheduler, DAG processor, triggerer, two Celery
workers) from the compose file's settings, with the fake Modal control plane beside it. One stack for
this folder's tests, stopped by process group after the last of them. Settings that differ from
``tests/e2e`` say why below.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.airflow_celery import CeleryAirflow
from tests.e2e.conftest import E2E, e2e_stack

# Up to 8 folds of a run at once (the triggerer fault defers 8); a worker that died is noticed after
# 20 s without a task heartbeat (Airflow's default is 300 s; the kill -9 fault waits for it).
# No GPU pool: its 3 slots (tests/e2e checks them) would keep the 8 folds from deferring together. A
# progress line a second in the workers' folds, so the kill -9 fault sees a fold between checkpoints.
CELERY_ENV = {
    "LEROBOT_KFOLD_MAX_PARALLEL_FOLDS": "8",
    "LEROBOT_KFOLD_GPU_POOL": "",
    "LEROBOT_KFOLD_PROGRESS_EVERY_S": "1",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
}


@pytest.fixture(scope="package")
def e2e(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> Iterator[E2E]:
    with e2e_stack(CeleryAirflow, tmp_path_factory.mktemp("e2e_celery"), demo_root, CELERY_ENV) as stack:
        yield stack
