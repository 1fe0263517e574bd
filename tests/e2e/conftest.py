"""One real Airflow for the end-to-end tests, with the fake Modal control plane beside it.

Airflow runs its API server, scheduler, DAG processor and triggerer (LocalExecutor, SQLite) on
127.0.0.1, started once for this folder's tests and stopped by process group after the last of them
(``tests/e2e_celery`` runs the same stack, ``e2e_stack``, on the compose topology). The fake Modal
control plane serves the app's functions from another storage root (the stand-in for the Modal
Volume). The Modal token and a W&B key are configured the way users configure them, so the secrets test
can look for them everywhere.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lerobot_kfold import progress
from scripts.airflow_local import LocalAirflow
from scripts.fake_modal.control_plane import FakeModalControlPlane
from tests.e2e.modal_functions import FUNCTIONS

MODAL_TOKEN_ID = "ak-e2e-token-id"
MODAL_TOKEN_SECRET = "as-e2e-token-secret-5c1f0d"
WANDB_API_KEY = "wandb-e2e-key-9e27b4a1c3"
DATASET = "datasets/so101_demo"
DAG_ID = "lerobot_kfold_cv"
# The small demo ACT, chosen explicitly (the default is lerobot's ACT), a few steps.
TINY = {"policy_preset": "small", "steps": 4, "eval_every": 2, "save_every": 2, "batch_size": 8}
# The Airflow pool every fold task takes a slot of (LEROBOT_KFOLD_GPU_POOL): fold calls across all runs.
GPU_POOL, GPU_POOL_SLOTS = "e2e_gpus", 3


@dataclass
class E2E:
    airflow: LocalAirflow
    plane: FakeModalControlPlane
    local_storage: Path
    modal_storage: Path

    def trigger(self, conf: dict, run_id: str | None = None) -> str:
        body = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        response = self.airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json=body)
        assert response.status_code == 200, response.text
        return response.json()["dag_run_id"]

    def fold_call_ids(self, run_id: str) -> dict[int, str]:
        folds = [
            t for t in self.airflow.task_instances(DAG_ID, run_id) if t["task_id"] == "kfold_cv.train_fold"
        ]
        ids = {}
        for fold in folds:
            try:
                ids[fold["map_index"]] = self.airflow.xcom(
                    DAG_ID, run_id, "kfold_cv.train_fold", key="modal_call_id", map_index=fold["map_index"]
                )
            except Exception:  # not spawned yet
                continue
        return ids


class TokenCheckingControlPlane(FakeModalControlPlane):
    """Accepts only the token of the Airflow connection: proves the credentials come from there."""

    def command(self) -> list[str]:
        return [*super().command(), "--token", f"{MODAL_TOKEN_ID}:{MODAL_TOKEN_SECRET}"]


@contextlib.contextmanager
def e2e_stack(
    launcher: Callable[..., LocalAirflow], base: Path, demo_root: Path, env: dict[str, str] | None = None
) -> Iterator[E2E]:
    """The fake Modal plane and an Airflow made by ``launcher(home, env=...)``, the demo dataset in
    both storages; stopped (and their logs kept in test-artifacts/<base name>) at the end."""
    local_storage, modal_storage = base / "storage", base / "modal-volume"
    for storage in (local_storage, modal_storage):
        shutil.copytree(demo_root, storage / DATASET)
    # The Modal image's environment, where the fold bodies run (progress: a record a second, not a minute).
    image_env = {progress.PROGRESS_DICT_ENV: progress.PROGRESS_DICT, progress.PROGRESS_EVERY_ENV: "1"}
    plane = TokenCheckingControlPlane(
        FUNCTIONS,
        base / "plane",
        env={"LEROBOT_KFOLD_STORAGE": str(modal_storage), "HF_HUB_OFFLINE": "1", **image_env},
    )
    plane.start()
    connection = {"conn_type": "modal", "login": MODAL_TOKEN_ID, "password": MODAL_TOKEN_SECRET}
    settings = {
        "LEROBOT_KFOLD_STORAGE": str(local_storage),
        "LEROBOT_KFOLD_POLL_INTERVAL_S": "1",
        "LEROBOT_KFOLD_MAX_PARALLEL_FOLDS": "2",
        "LEROBOT_KFOLD_GPU_POOL": GPU_POOL,
        "MODAL_SERVER_URL": plane.url,
        "AIRFLOW_CONN_MODAL_DEFAULT": json.dumps(connection),
        "AIRFLOW_CONN_WANDB_DEFAULT": json.dumps({"conn_type": "generic", "password": WANDB_API_KEY}),
        "WANDB_API_KEY": WANDB_API_KEY,
        "HF_HUB_OFFLINE": "1",
    }
    airflow = launcher(base / "airflow", env={**settings, **(env or {})})
    try:
        airflow.start()
        pool = {"name": GPU_POOL, "slots": GPU_POOL_SLOTS, "include_deferred": True}
        airflow.api("POST", "/pools", json=pool).raise_for_status()
        airflow.wait_for_dag(DAG_ID)
        yield E2E(airflow, plane, local_storage, modal_storage)
    finally:
        airflow.stop()
        plane.stop()
        _keep_artifacts(airflow, plane, base.name)


@pytest.fixture(scope="package")
def e2e(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> Iterator[E2E]:
    """One LocalAirflow (SQLite, LocalExecutor) for this folder's tests, stopped after the last one."""
    with e2e_stack(LocalAirflow, tmp_path_factory.mktemp("e2e"), demo_root) as stack:
        yield stack


def _keep_artifacts(airflow: LocalAirflow, plane: FakeModalControlPlane, name: str) -> None:
    """Airflow's and the fake plane's logs, for a failed CI run (test-artifacts/ is git-ignored)."""
    target = Path(__file__).resolve().parents[2] / "test-artifacts" / name.rstrip("0123456789")
    target.mkdir(parents=True, exist_ok=True)
    for source in (airflow.home / "airflow.log", plane.events_file, plane.stderr_file):
        if source.exists():
            shutil.copy(source, target / source.name)
    if (airflow.home / "logs").is_dir():
        shutil.copytree(airflow.home / "logs", target / "logs", dirs_exist_ok=True)
