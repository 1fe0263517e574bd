"""Secrets never leak: the Modal token secret and the W&B key appear in no XCom, rendered template
field, run conf or task log, on either backend.

Both are configured the way users configure them (the ``modal_default`` connection, a ``wandb_default``
connection and ``WANDB_API_KEY`` in the workers' environment; see conftest); the local run logs its folds
to W&B (offline), so the fold tasks read the connection's key. The fake Modal control plane
accepts only the connection's token, so the modal run below proves the secret was used, not just absent.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import DAG_ID, DATASET, E2E, MODAL_TOKEN_SECRET, TINY, WANDB_API_KEY

pytestmark = pytest.mark.slow

SECRETS = {"modal token secret": MODAL_TOKEN_SECRET, "W&B API key": WANDB_API_KEY}


def _leaks(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def test_no_secret_in_xcom_rendered_fields_conf_or_logs(e2e: E2E) -> None:
    runs = [
        e2e.trigger({"dataset_root": DATASET, "k": 2, "backend": "modal", "wandb_mode": "disabled", **TINY}),
        # W&B offline: the local folds read the key from the wandb_default connection and log with it.
        e2e.trigger({"dataset_root": DATASET, "k": 2, "backend": "local", "wandb_mode": "offline", **TINY}),
    ]
    assert [e2e.airflow.wait_for_run(DAG_ID, run, timeout=300) for run in runs] == ["success", "success"]
    assert any(s["function"] == "train_fold" for s in e2e.plane.spawns()), "the modal run used the token"
    local_run = e2e.local_storage / e2e.airflow.xcom(DAG_ID, runs[1], "kfold_cv.aggregate")["run_folder"]
    assert len(list(local_run.glob("folds/fold_*/wandb/offline-run-*"))) == 2, "both folds logged to W&B"

    scanned: dict[str, str] = {}
    for run in runs:
        scanned[f"{run} conf"] = json.dumps(e2e.airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run}").json())
        entries = e2e.airflow.api(
            "GET", f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances/~/xcomEntries", params={"limit": 1000}
        ).json()["xcom_entries"]
        assert "return_value" in {e["key"] for e in entries}
        for entry in entries:
            value = e2e.airflow.xcom(DAG_ID, run, entry["task_id"], entry["key"], entry["map_index"])
            scanned[f"{run} xcom {entry['task_id']}[{entry['map_index']}] {entry['key']}"] = json.dumps(value)
        for ti in e2e.airflow.task_instances(DAG_ID, run):
            where = f"{run} {ti['task_id']}[{ti['map_index']}]"
            scanned[f"{where} rendered"] = json.dumps(ti.get("rendered_fields"))
            for try_number in range(1, ti["try_number"] + 1):
                log = e2e.airflow.api(
                    "GET",
                    f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{ti['task_id']}/logs/{try_number}",
                    params={"map_index": ti["map_index"], "full_content": True},
                    headers={"Accept": "application/x-ndjson"},
                )
                assert log.status_code == 200, log.text
                scanned[f"{where} log try {try_number}"] = log.text
    # Every log Airflow wrote for anything, task logs and the components' own output included.
    for path in sorted((e2e.airflow.home / "logs").rglob("*")):
        if path.is_file():
            scanned[str(path)] = path.read_text(errors="replace")
    scanned["components log"] = (e2e.airflow.home / "airflow.log").read_text(errors="replace")

    assert any("train_fold" in text for name, text in scanned.items() if "log" in name), "logs were read"
    assert any("modal_call_id" in name for name in scanned), "the modal run's call ids were scanned"
    leaks = {name: _leaks(text) for name, text in scanned.items() if _leaks(text)}
    assert leaks == {}
