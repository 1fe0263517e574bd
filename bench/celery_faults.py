#!/usr/bin/env python
"""Faults on the compose topology (``scripts/airflow_celery.py``): one DAG run per fault, with figures.

The heavier faults of issue 14, which CI does not run (CI runs the kill -9 of a worker and the triggerer
restart: ``tests/e2e_celery/test_faults.py``). One native compose topology (CeleryExecutor, PostgreSQL,
Redis, two workers) and one fake Modal control plane (``bench/fault_functions.py``) behind a TCP proxy
(``scripts/fake_modal/outage.py``) serve every fault in turn:

- ``scheduler``: the scheduler killed (-9) and restarted while k modal folds are deferred;
- ``outage``: the fake plane unreachable for ``--outage-s`` s (connections reset, new ones refused)
  while the folds' calls run;
- ``postgres``: PostgreSQL stopped (fast shutdown) and started again after ``--postgres-down-s`` s;
- ``preemption``: a real training fold's Modal input preempted mid-training (the plane stops it and
  starts it again, as Modal does); it must resume from its checkpoint on the Volume with the metrics of
  an uninterrupted fold.

As compose's ``restart: always`` would, a component that exits is started again (counted). Spawns and
cancels are counted from the plane's own call log. Per fault: run state, folds succeeded, Airflow
retries, fold calls spawned (k = none twice), cancels, restarts, run wall. About 8 minutes for all four.

    .venv/bin/python bench/celery_faults.py [--faults scheduler outage postgres preemption] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib
import httpx
from benchlib import BENCH_CACHE, REPO, markdown_table, progress

from scripts.airflow_celery import CeleryAirflow
from scripts.fake_modal.control_plane import FakeModalControlPlane
from scripts.fake_modal.outage import OutageProxy
from scripts.fold_reference import progress_steps, train_uninterrupted
from scripts.process_groups import wait_until

DAG_ID, TRAIN = "lerobot_kfold_cv", "kfold_cv.train_fold"
FUNCTIONS = {
    "lerobot-kfold/prepare_dataset": "fault_functions:prepare_dataset",
    "lerobot-kfold/train_fold": "fault_functions:train_fold",
    "lerobot-kfold/aggregate": "lerobot_kfold.modal_app:aggregate",
}
DEMO = "datasets/so101_demo"
SYNTHETIC = {"dataset_root": "datasets/fanout_synthetic", "steps": 1000, "eval_every": 500, "save_every": 500}
FAULTS = ("scheduler", "outage", "postgres", "preemption")


@dataclass
class Stack:
    args: argparse.Namespace
    airflow: CeleryAirflow
    plane: FakeModalControlPlane
    proxy: OutageProxy
    volume: Path

    def folds(self, run_id: str) -> list[dict[str, Any]]:
        return [t for t in self.airflow.task_instances(DAG_ID, run_id) if t["task_id"] == TRAIN]

    def call_id(self, run_id: str, map_index: int) -> str:
        return self.airflow.xcom(DAG_ID, run_id, TRAIN, key="modal_call_id", map_index=map_index)

    def all_deferred(self, run_id: str, k: int) -> bool:
        try:
            folds = self.folds(run_id)
        except httpx.HTTPError:  # the API server is slow to answer while k task processes start
            return False
        return len(folds) == k and all(
            f["state"] == "deferred" and (f.get("trigger") or {}).get("triggerer_id") for f in folds
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchlib.parser("Faults on the natively run compose topology, with figures.")
    add = parser.add_argument
    add("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    add("--k", type=int, default=4, help="folds of the scheduler, outage and postgres runs")
    add("--fold-seconds", type=float, default=120.0, help="T: seconds each stand-in fold call takes")
    add("--outage-s", type=float, default=60.0)
    add("--postgres-down-s", type=float, default=10.0)
    add("--work-dir", type=Path, default=BENCH_CACHE / "celery_faults", help="scratch folder; emptied first")
    return parser.parse_args(argv)


def run_fault(stack: Stack, name: str, conf: dict, inject: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Trigger one run, ``inject(run_id)`` the fault, wait for the end (restarting exited components)."""
    started = time.time()
    run_id = f"fault_{name}_{int(started)}"
    body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
    stack.airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json=body).raise_for_status()
    progress(f"{name}: triggered {run_id}")
    injected = inject(run_id)
    progress(f"{name}: fault injected ({injected})")
    restarts: list[str] = []
    state = "running"
    deadline = time.monotonic() + 1200
    while state not in ("success", "failed") and time.monotonic() < deadline:
        time.sleep(2)
        restarts += stack.airflow.restart_exited()
        try:
            state = stack.airflow.run_state(DAG_ID, run_id)
        except Exception as exc:  # the API server may answer 500 while PostgreSQL is down
            state = f"unknown ({type(exc).__name__})"
    folds = stack.folds(run_id)
    calls = {
        e["call_id"] for e in stack.plane.spawns() if e["function"] == "train_fold" and e["t"] >= started
    }
    return {
        "fault": name,
        "run_id": run_id,
        "state": state,
        "k": conf["k"],
        "folds_succeeded": sum(f["state"] == "success" for f in folds),
        "airflow_retries": sum((f.get("try_number") or 1) - 1 for f in folds),
        "fold_calls_spawned": len(calls),
        "cancels": sum(c["call_id"] in calls for c in stack.plane.cancels()),
        "preempted_inputs": sum(e["call_id"] in calls for e in stack.plane.events("preempted")),
        "components_restarted": restarts,
        "run_wall_s": round(time.time() - started, 1),
        **injected,
    }


def kill_scheduler(stack: Stack) -> dict[str, Any]:
    stack.airflow.restart_component("scheduler", signal.SIGKILL)
    return {"injected": "scheduler kill -9 and restart"}


def cut_the_plane(stack: Stack) -> dict[str, Any]:
    stack.proxy.cut()
    time.sleep(stack.args.outage_s)
    stack.proxy.restore()
    return {"injected": f"plane unreachable {stack.args.outage_s:g} s"}


def restart_postgres(stack: Stack) -> dict[str, Any]:
    stack.airflow.postgres.restart(down_s=stack.args.postgres_down_s)
    return {"injected": f"PostgreSQL down {stack.args.postgres_down_s:g} s"}


# Faults injected once every fold of a stand-in run (k calls of T s) waits in the triggerer.
WHILE_DEFERRED = {"scheduler": kill_scheduler, "outage": cut_the_plane, "postgres": restart_postgres}


def while_deferred(stack: Stack, name: str) -> dict[str, Any]:
    k = stack.args.k

    def inject(run_id: str) -> dict[str, Any]:
        wait_until(lambda: stack.all_deferred(run_id, k), 300, f"{k} folds to wait in the triggerer")
        return WHILE_DEFERRED[name](stack)

    return run_fault(stack, name, {**SYNTHETIC, "k": k, "backend": "modal"}, inject)


def fault_preemption(stack: Stack) -> dict[str, Any]:
    conf = {"dataset_root": DEMO, "k": 2, "backend": "modal", "policy_preset": "small", "steps": 300}
    conf["eval_every"] = 100
    conf.update(save_every=100, batch_size=8, seed=5)
    seen: dict[str, Any] = {}

    def preempt(run_id: str) -> dict[str, Any]:
        last = (
            stack.volume
            / "runs"
            / DAG_ID
            / run_id
            / "kfold_cv"
            / "folds"
            / "fold_000"
            / "checkpoints"
            / "last"
        )

        def past_a_checkpoint() -> int | None:
            steps = progress_steps(stack.plane.stdout_file.read_text(errors="replace"), 0)
            return steps[-1] if last.is_symlink() and steps and steps[-1] % 100 else None

        reached = wait_until(past_a_checkpoint, 600, "fold 0 to train past a checkpoint on the volume", 0.2)
        seen["checkpoint"] = int(last.resolve().name)
        stack.plane.preempt(stack.call_id(run_id, 0))
        return {"last_logged_step_before": reached, "resumed_from_checkpoint": seen["checkpoint"]}

    figures = run_fault(stack, "preemption", conf, preempt)
    resumed = stack.airflow.xcom(DAG_ID, figures["run_id"], TRAIN, map_index=0)
    plan = stack.airflow.xcom(DAG_ID, figures["run_id"], "kfold_cv.plan")
    env = benchlib.bench_env(extra={"LEROBOT_KFOLD_STORAGE": str(stack.volume)})
    reference = train_uninterrupted(plan[0]["config"], stack.args.work_dir / "reference_fold_000", env)
    figures.update(
        resumed_from_step=resumed["resumed_from_step"],
        steps_lost=figures["last_logged_step_before"] - resumed["resumed_from_step"],
        metrics_equal_to_uninterrupted=resumed["metrics"] == reference["metrics"],
    )
    return figures


def start_stack(args: argparse.Namespace, work: Path) -> Stack:
    dataset = BENCH_CACHE / "so101_12"
    benchlib.ensure_demo_dataset(dataset, ["--episodes", "12"], sys.executable, benchlib.bench_env())
    for storage in ("storage", "modal-volume"):
        shutil.copytree(dataset, work / storage / DEMO)
    env = benchlib.bench_env(
        extra={
            "LEROBOT_KFOLD_STORAGE": str(work / "modal-volume"),
            "FANOUT_FOLD_SECONDS": str(args.fold_seconds),
        }
    )
    env["PYTHONPATH"] = f"{REPO / 'bench'}:{env['PYTHONPATH']}"
    plane = FakeModalControlPlane(FUNCTIONS, work / "plane", env=env).start()
    proxy = OutageProxy(plane.port).start()
    client = plane.client_env()
    connection = {
        "conn_type": "modal",
        "login": client["MODAL_TOKEN_ID"],
        "password": client["MODAL_TOKEN_SECRET"],
    }
    airflow = CeleryAirflow(
        work / "airflow",
        env={
            "LEROBOT_KFOLD_STORAGE": str(work / "storage"),
            "LEROBOT_KFOLD_POLL_INTERVAL_S": "2",
            "LEROBOT_KFOLD_MAX_PARALLEL_FOLDS": str(max(args.k, 2)),
            "MODAL_SERVER_URL": proxy.url,
            "AIRFLOW_CONN_MODAL_DEFAULT": json.dumps(connection),
            "HF_HUB_OFFLINE": "1",
        },
    )
    return Stack(args, airflow, plane, proxy, work / "modal-volume")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    benchlib.exit_on_sigterm()
    work = args.work_dir = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    stack = start_stack(args, work)
    results: list[dict[str, Any]] = []
    try:
        progress("starting the compose topology natively")
        stack.airflow.start()
        stack.airflow.wait_for_dag(DAG_ID)
        for name in args.faults:
            results.append(fault_preemption(stack) if name == "preemption" else while_deferred(stack, name))
            progress(f"{name}: {results[-1]['state']}")
            benchlib.write_json(args, "celery_faults", {"faults": results}, complete=False)
    finally:
        stack.airflow.stop()
        stack.proxy.stop()
        stack.plane.stop()
    keys = ["fault", "state", "folds_succeeded", "airflow_retries", "fold_calls_spawned", "cancels"]
    keys += ["preempted_inputs", "components_restarted", "run_wall_s"]
    print(markdown_table(["k", *keys], [[r["k"], *(r.get(key) for key in keys)] for r in results]))
    for r in results:
        extra = {k: v for k, v in r.items() if k not in keys and k not in ("k", "run_id")}
        print(f"{r['fault']}: {extra}")
    benchlib.finish(args, "celery_faults", {"faults": results})
    return 0 if all(r["state"] == "success" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
