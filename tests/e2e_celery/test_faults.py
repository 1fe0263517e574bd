"""Faults on the compose topology that CI can afford (the heavier ones: ``bench/celery_faults.py``).

- kill -9 of the Celery worker running a local fold mid-training (the worker and everything it forked,
  as when its container dies): the scheduler notices the lost heartbeat, Airflow's retry resumes the fold
  from its last checkpoint, and the fold ends with exactly the metrics of an uninterrupted run;
- the triggerer killed and restarted while 8 modal folds are deferred: every fold finishes, and the
  fake plane's own call log shows one spawn per fold and no cancel.

Each test writes what it measured to ``test-artifacts/e2e_celery/faults.json``.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from lerobot_kfold import storage
from scripts.fold_reference import progress_steps, train_uninterrupted
from scripts.process_groups import wait_until
from tests.e2e.conftest import DAG_ID, DATASET, E2E, TINY

pytestmark = pytest.mark.slow

TRAIN = "kfold_cv.train_fold"
REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "test-artifacts" / "e2e_celery" / "faults.json"
# A checkpoint every CHECKPOINT_EVERY steps: the kill comes between the first and the second (~5 s of the
# small ACT's training apart, with a progress line a second: CELERY_ENV).
STEPS, CHECKPOINT_EVERY = 400, 200


def record(name: str, figures: dict[str, Any]) -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps({**known, name: figures}, indent=2))


def fold(e2e: E2E, run_id: str, map_index: int) -> dict[str, Any]:
    tis = e2e.airflow.task_instances(DAG_ID, run_id)
    return next((t for t in tis if t["task_id"] == TRAIN and t["map_index"] == map_index), {})


def logged_steps(e2e: E2E, run_id: str, map_index: int, attempt: int) -> list[int]:
    """The training steps a fold's task log reports, in order (its progress lines)."""
    log = (
        e2e.airflow.home
        / "logs"
        / f"dag_id={DAG_ID}"
        / f"run_id={run_id}"
        / f"task_id={TRAIN}"
        / f"map_index={map_index}"
        / f"attempt={attempt}.log"
    )
    return progress_steps(log.read_text(errors="replace") if log.exists() else "", map_index)


def test_kill_9_of_the_worker_running_a_fold_resumes_it_with_the_same_metrics(
    e2e: E2E, tmp_path: Path
) -> None:
    conf = {"dataset_root": DATASET, "k": 2, "policy_preset": "small", "steps": STEPS}
    conf |= {"eval_every": CHECKPOINT_EVERY, "save_every": CHECKPOINT_EVERY}
    run_id = e2e.trigger({**conf, "batch_size": 8, "seed": 7}, run_id=f"kill9__{time.time_ns()}")
    run_folder = f"{storage.run_folder(DAG_ID, run_id)}/kfold_cv"
    last = e2e.local_storage / storage.fold_folder(run_folder, 0) / "checkpoints" / "last"

    def past_a_checkpoint() -> int | None:
        # Steps trained since the last checkpoint are what a kill loses: kill once some are.
        steps = logged_steps(e2e, run_id, 0, attempt=1)
        return steps[-1] if last.is_symlink() and steps and steps[-1] % CHECKPOINT_EVERY else None

    reached = wait_until(past_a_checkpoint, 240, "fold 0 to train past its first checkpoint", 0.2)
    checkpoint = int(last.resolve().name)
    worker = e2e.airflow.component_of(fold(e2e, run_id, 0)["pid"])
    assert worker and worker.startswith("worker-"), f"fold 0 runs in {worker}, not a Celery worker"
    killed_at = time.monotonic()
    e2e.airflow.kill_component(worker, signal.SIGKILL)
    e2e.airflow.start_component(worker)  # as compose's `restart: always` does

    assert e2e.airflow.wait_for_run(DAG_ID, run_id, timeout=400) == "success"

    recovered_s = time.monotonic() - killed_at
    resumed = e2e.airflow.xcom(DAG_ID, run_id, TRAIN, map_index=0)
    assert fold(e2e, run_id, 0)["try_number"] == 2
    assert resumed["resumed_from_step"] == checkpoint
    on_disk = json.loads((last.parents[1] / "result.json").read_text())
    assert on_disk["steps_this_run"] == STEPS - checkpoint
    plan = e2e.airflow.xcom(DAG_ID, run_id, "kfold_cv.plan")
    env = {**e2e.airflow.environment(), "LEROBOT_KFOLD_STORAGE": str(e2e.local_storage)}
    reference = train_uninterrupted(plan[0]["config"], tmp_path / "fold_000", env)
    assert reference["resumed_from_step"] is None
    same = ("metrics", "final_train_loss", "steps", "best_step")
    assert {k: resumed[k] for k in same} == {k: reference[k] for k in same}, (
        "must match an uninterrupted fold"
    )
    curve = json.loads((tmp_path / "fold_000" / "result.json").read_text())["learning_curve"]
    assert on_disk["learning_curve"] == curve
    summary = e2e.airflow.xcom(DAG_ID, run_id, "kfold_cv.aggregate")
    assert summary["totals"]["n_succeeded"] == 2
    record(
        "kill -9 of the worker mid-fold",
        {
            "killed_worker": worker,
            "last_logged_step_before_kill": reached,
            "resumed_from_step": checkpoint,
            "steps_lost_at_least": reached - checkpoint,
            "kill_to_run_end_s": round(recovered_s, 1),
            "metrics_equal_to_uninterrupted": True,
        },
    )


def test_a_triggerer_restart_with_8_folds_deferred_spawns_nothing_twice(e2e: E2E) -> None:
    started = time.time()
    conf = {"dataset_root": DATASET, "k": 8, "backend": "modal", **TINY}
    run_id = e2e.trigger(conf, run_id=f"slow30__triggerer_restart_{time.time_ns()}")

    def all_waiting_in_the_triggerer() -> bool:
        folds = [t for t in e2e.airflow.task_instances(DAG_ID, run_id) if t["task_id"] == TRAIN]
        return len(folds) == 8 and all(
            f["state"] == "deferred" and (f.get("trigger") or {}).get("triggerer_id") for f in folds
        )

    wait_until(all_waiting_in_the_triggerer, 180, "8 folds to wait in the triggerer")
    restarted_at = time.monotonic()
    e2e.airflow.restart_component("triggerer", signal.SIGKILL)

    assert e2e.airflow.wait_for_run(DAG_ID, run_id, timeout=400) == "success"

    calls = set(e2e.fold_call_ids(run_id).values())
    spawned = [s for s in e2e.plane.spawns() if s["function"] == "train_fold" and s["t"] >= started]
    assert len(calls) == 8
    assert sorted(s["call_id"] for s in spawned) == sorted(calls), "one spawn per fold, none twice"
    assert not [c for c in e2e.plane.cancels() if c["call_id"] in calls]
    summary = e2e.airflow.xcom(DAG_ID, run_id, "kfold_cv.aggregate")
    assert summary["totals"]["n_succeeded"] == 8
    record(
        "triggerer killed and restarted with 8 folds deferred",
        {
            "fold_calls_spawned": len(spawned),
            "cancels": 0,
            "restart_to_run_end_s": round(time.monotonic() - restarted_at, 1),
            "run_wall_s": round(time.time() - started, 1),
        },
    )
