"""The k-fold DAG in a real Airflow (scheduler, triggerer, API server), driven through the REST API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scripts.process_groups import wait_until
from tests.e2e.conftest import DAG_ID, DATASET, E2E, TINY

pytestmark = pytest.mark.slow

TRAIN = "kfold_cv.train_fold"


def _summary(e2e: E2E, run_id: str) -> dict:
    return e2e.airflow.xcom(DAG_ID, run_id, "kfold_cv.aggregate")


def _fold_states(e2e: E2E, run_id: str) -> dict[int, dict]:
    return {t["map_index"]: t for t in e2e.airflow.task_instances(DAG_ID, run_id) if t["task_id"] == TRAIN}


class TestLocalBackend:
    def test_a_triggered_run_trains_every_fold_and_publishes_the_summary(self, e2e: E2E) -> None:
        run_id = e2e.trigger({"dataset_root": DATASET, "k": 3, **TINY})

        assert e2e.airflow.wait_for_run(DAG_ID, run_id, timeout=300) == "success"

        folds = _fold_states(e2e, run_id)
        assert {i: f["rendered_map_index"] for i, f in folds.items()} == {
            0: "fold 0",
            1: "fold 1",
            2: "fold 2",
        }
        results = [e2e.airflow.xcom(DAG_ID, run_id, TRAIN, map_index=i) for i in range(3)]
        summary = _summary(e2e, run_id)
        values = [r["metrics"]["val_l1"] for r in results]
        assert summary["totals"]["n_succeeded"] == 3
        assert summary["metrics"]["val_l1"]["mean"] == pytest.approx(sum(values) / 3)
        assert summary["best_fold"]["fold_id"] == values.index(min(values))
        run_dir = e2e.local_storage / summary["run_folder"]
        assert json.loads((run_dir / "summary.json").read_text())["metrics"] == summary["metrics"]
        assert all(
            (run_dir / name).is_file() for name in ("folds.csv", "report.html", "report.png", "plan.json")
        )

    def test_two_runs_triggered_at_once_keep_separate_outputs(self, e2e: E2E) -> None:
        run_ids = [e2e.trigger({"dataset_root": DATASET, "k": 2, "seed": seed, **TINY}) for seed in (1, 2)]

        assert [e2e.airflow.wait_for_run(DAG_ID, r, timeout=300) for r in run_ids] == ["success", "success"]

        summaries = [_summary(e2e, r) for r in run_ids]
        folders = {s["run_folder"] for s in summaries}
        assert len(folders) == 2
        for summary in summaries:
            on_disk = json.loads(Path(summary["outputs"]["summary_json"]).read_text())
            assert on_disk["run_id"] == summary["run_id"]
            assert on_disk["totals"]["n_succeeded"] == 2


class TestBadConf:
    @pytest.mark.parametrize(
        ("conf", "param"),
        [
            pytest.param({"k": 1}, "k", id="k"),
            pytest.param({"gpu": "TPU"}, "gpu", id="gpu"),
            pytest.param({"steps": -1}, "steps", id="steps"),
        ],
    )
    def test_is_rejected_with_400_naming_the_parameter(self, e2e: E2E, conf: dict, param: str) -> None:
        response = e2e.airflow.api(
            "POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}
        )
        assert response.status_code == 400
        assert f"param {param}" in response.json()["detail"]


class TestModalBackend:
    def test_folds_defer_and_complete_through_the_triggerer(self, e2e: E2E) -> None:
        conf = {"dataset_root": DATASET, "k": 2, "backend": "modal", "gpu": "A100", **TINY}
        run_id = e2e.trigger(conf)
        seen: set[str] = set()

        def finished() -> bool:
            seen.update(f["state"] for f in _fold_states(e2e, run_id).values() if f["state"])
            return e2e.airflow.run_state(DAG_ID, run_id) in {"success", "failed"}

        wait_until(finished, 300, "the modal run")

        assert e2e.airflow.run_state(DAG_ID, run_id) == "success"
        assert "deferred" in seen, f"folds never deferred (saw {seen})"
        call_ids = e2e.fold_call_ids(run_id)
        spawned = {s["call_id"]: s for s in e2e.plane.spawns() if s["function"] == "train_fold"}
        assert set(call_ids.values()) <= set(spawned)
        assert {spawned[c]["gpu"] for c in call_ids.values()} == {"A100"}
        summary = _summary(e2e, run_id)
        assert summary["totals"]["n_succeeded"] == 2
        assert (e2e.modal_storage / summary["run_folder"] / "summary.json").is_file(), "written on the volume"

    def test_marking_a_deferred_fold_failed_cancels_its_call_and_clearing_one_reattaches(
        self, e2e: E2E
    ) -> None:
        conf = {"dataset_root": DATASET, "k": 2, "backend": "modal", "min_successful_folds": 1, **TINY}
        run_id = e2e.trigger(conf, run_id=f"slow__{time.time_ns()}")

        def both_waiting_in_the_triggerer() -> bool:
            # on_kill runs only for a trigger a triggerer has started: wait until each has one.
            folds = _fold_states(e2e, run_id)
            return len(folds) == 2 and all(
                f["state"] == "deferred" and (f.get("trigger") or {}).get("triggerer_id")
                for f in folds.values()
            )

        wait_until(both_waiting_in_the_triggerer, 120, "both folds to wait in the triggerer")
        time.sleep(2)  # the triggerer starts a trigger within a second of taking it
        calls = e2e.fold_call_ids(run_id)

        marked = e2e.airflow.api(
            "PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TRAIN}/0", json={"new_state": "failed"}
        )
        assert marked.status_code == 200, marked.text
        cleared = e2e.airflow.api(
            "POST",
            f"/dags/{DAG_ID}/clearTaskInstances",
            json={"dag_run_id": run_id, "task_ids": [[TRAIN, 1]], "dry_run": False, "only_failed": False},
        )
        assert cleared.status_code == 200, cleared.text

        wait_until(lambda: any(c["call_id"] == calls[0] for c in e2e.plane.cancels()), 60, "fold 0's cancel")
        assert e2e.airflow.wait_for_run(DAG_ID, run_id, timeout=300) == "success"
        folds = _fold_states(e2e, run_id)
        assert folds[0]["state"] == "failed"
        assert folds[1]["state"] == "success" and folds[1]["try_number"] == 2
        first_spawn = min(s["t"] for s in e2e.plane.spawns() if s["call_id"] in calls.values())
        fold_spawns_since = [
            s for s in e2e.plane.spawns() if s["function"] == "train_fold" and s["t"] >= first_spawn
        ]
        assert len(fold_spawns_since) == 2, "the cleared fold re-attached instead of spawning again"
        assert e2e.fold_call_ids(run_id)[1] == calls[1]
        assert calls[1] not in {c["call_id"] for c in e2e.plane.cancels()}, "clearing must not cancel"
        summary = _summary(e2e, run_id)
        assert summary["totals"]["n_succeeded"] == 1 and summary["failed_folds"][0]["fold_id"] == 0


def test_runs_of_both_backends_at_once_do_not_interfere(e2e: E2E) -> None:
    run_ids = {
        "local": e2e.trigger({"dataset_root": DATASET, "k": 2, **TINY}),
        "modal": e2e.trigger({"dataset_root": DATASET, "k": 2, "backend": "modal", **TINY}),
    }
    results = e2e.airflow.wait_for_runs(DAG_ID, run_ids, 300)
    assert results == {"local": "success", "modal": "success"}
