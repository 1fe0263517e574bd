"""The manual k-fold DAG, run end to end with ``dag.test()`` on a freshly recorded simulator dataset.

Backend local trains in this process; backend modal goes through the real ``modal`` client to the fake
Modal control plane, which runs the same function bodies. Both must give a summary in XCom that matches
the fold results, and the files on storage.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import rendered_map_indexes, task_states, xcom_values

DAG_ID = "lerobot_kfold_cv"
# The small demo ACT, chosen explicitly (the default is lerobot's ACT), a few steps.
TINY = {"policy_preset": "small", "steps": 4, "eval_every": 2, "save_every": 2, "batch_size": 8}
APP_FUNCTIONS = {
    f"lerobot-kfold/{name}": f"lerobot_kfold.modal_app:{name}"
    for name in ("prepare_dataset", "train_fold", "aggregate")
}

pytestmark = pytest.mark.slow

W_KEY = "wandb-dag-test-key-3c9e"
KEYS_SEEN: list[str | None] = []


def train_fold_seeing_the_key(config: dict[str, Any]) -> dict[str, Any]:
    """The real local fold body, after noting the W&B key it trains with."""
    from modal_gpu.local import resolve_callable

    KEYS_SEEN.append(os.environ.get("WANDB_API_KEY"))
    return resolve_callable("lerobot_kfold.modal_app:train_fold")(config=config)


def _check_summary_against_folds(summary: dict[str, Any], folds: dict[int, dict[str, Any]], k: int) -> None:
    assert sorted(folds) == list(range(k))
    assert summary["totals"]["n_folds"] == k
    assert summary["totals"]["n_succeeded"] == k
    assert summary["failed_folds"] == []
    values = [folds[i]["metrics"]["val_l1"] for i in range(k)]
    stats = summary["metrics"]["val_l1"]
    assert stats["n"] == k
    assert math.isclose(stats["mean"], statistics.fmean(values), rel_tol=1e-9)
    assert math.isclose(stats["std"], statistics.stdev(values), rel_tol=1e-9)
    assert stats["ci_low"] < stats["mean"] < stats["ci_high"]
    best = min(range(k), key=lambda i: values[i])
    assert summary["best_fold"]["fold_id"] == best
    assert summary["best_fold"]["value"] == values[best]
    assert "folds" not in summary, "per-fold rows stay in the files, not in XCom"
    assert len(json.dumps(summary)) < 20_000, "the summary XCom must stay small"


def _check_files(storage: Path, summary: dict[str, Any], demo_root: Path, k: int) -> None:
    run_dir = storage / summary["run_folder"]
    for key in ("summary_json", "folds_csv", "report_png", "report_html"):
        assert Path(summary["outputs"][key]).is_file()
        assert Path(summary["outputs"][key]).parent == run_dir
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["metrics"] == summary["metrics"]
    assert len(on_disk["folds"]) == k
    plan = json.loads((run_dir / "plan.json").read_text())
    held_out = sorted(e for fold in plan["folds"] for e in fold["val_episodes"])
    n_episodes = json.loads((demo_root / "meta" / "info.json").read_text())["total_episodes"]
    assert held_out == list(range(n_episodes)), "every episode is held out exactly once"
    for fold_id in range(k):
        assert (run_dir / "folds" / f"fold_{fold_id:03d}" / "result.json").is_file()


class TestLocalBackend:
    def test_runs_every_fold_in_the_worker_and_summarizes_them(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        storage = tmp_path / "storage"
        monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(storage))
        dag = dagbag.get_dag(DAG_ID)

        run = dag.test(run_conf={"dataset_root": str(demo_root), "k": 3, "backend": "local", **TINY})

        assert run.state == "success", task_states(run)
        folds = xcom_values(run, "kfold_cv.train_fold")
        assert all(fold["status"] == "ok" for fold in folds.values())
        summary = xcom_values(run, "kfold_cv.aggregate")[-1]
        _check_summary_against_folds(summary, folds, k=3)
        _check_files(storage, summary, demo_root, k=3)
        assert summary["run_folder"].startswith(f"runs/{DAG_ID}/")
        assert rendered_map_indexes(run, "kfold_cv.train_fold") == {0: "fold 0", 1: "fold 1", 2: "fold 2"}
        assert xcom_values(run, "kfold_cv.train_fold", key="modal_call_id") == {}
        states = task_states(run)
        for task in ("plan_refit", "refit", "final_summary"):
            assert states[(f"kfold_cv.{task}", -1)] == "skipped", "refit is off by default"
        assert xcom_values(run, "kfold_cv.summary")[-1] == summary, "the run's summary: aggregate's"

    def test_cross_validates_a_camera_dataset_with_rollouts_rendering_its_cameras(
        self, dagbag, camera_demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        storage = tmp_path / "storage"
        monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(storage))
        conf = {"dataset_root": str(camera_demo_root), "k": 2, **TINY, "steps": 2, "eval_every": 2}
        conf.update(pretrained_backbone=False, sim_eval_episodes=1, sim_eval_max_steps=5)

        run = dagbag.get_dag(DAG_ID).test(run_conf=conf)

        assert run.state == "success", task_states(run)
        prepared = xcom_values(run, "kfold_cv.prepare_dataset")[-1]
        assert {"observation.images.front", "observation.images.wrist"} <= set(prepared["features"])
        folds = xcom_values(run, "kfold_cv.train_fold")
        summary = xcom_values(run, "kfold_cv.aggregate")[-1]
        _check_summary_against_folds(summary, folds, k=2)
        _check_files(storage, summary, camera_demo_root, k=2)
        assert summary["metrics"]["sim_success_rate"]["n"] == 2, "every fold rolled out with cameras"

    def test_two_runs_keep_separate_outputs(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(tmp_path))
        dag = dagbag.get_dag(DAG_ID)
        conf = {"dataset_root": str(demo_root), "k": 2, **TINY, "steps": 2}

        first = dag.test(run_conf=conf)
        second = dag.test(run_conf={**conf, "seed": 1})

        summaries = [xcom_values(run, "kfold_cv.aggregate")[-1] for run in (first, second)]
        assert summaries[0]["run_folder"] != summaries[1]["run_folder"]
        for summary in summaries:
            assert (
                json.loads(Path(summary["outputs"]["summary_json"]).read_text())["run_id"]
                == summary["run_id"]
            )

    def test_a_missing_dataset_fails_in_validate_before_any_training(
        self, dagbag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(tmp_path))
        dag = dagbag.get_dag(DAG_ID)

        run = dag.test(run_conf={"dataset_root": str(tmp_path / "nowhere"), **TINY})

        states = task_states(run)
        assert run.state == "failed"
        assert states[("kfold_cv.validate", -1)] == "failed"
        assert not any(
            task == "kfold_cv.train_fold" and state == "success" for (task, _), state in states.items()
        )
        assert not (tmp_path / "runs" / DAG_ID).exists() or not any(
            (tmp_path / "runs" / DAG_ID).rglob("result.json")
        )

    def test_an_unknown_conf_key_fails_in_validate_naming_it(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(tmp_path))
        run = dagbag.get_dag(DAG_ID).test(run_conf={"dataset_root": str(demo_root), "K": 3, **TINY})
        states = task_states(run)
        assert states[("kfold_cv.validate", -1)] == "failed"
        assert states[("kfold_cv.aggregate", -1)] == "upstream_failed"

    def test_settings_the_data_cannot_support_fail_in_plan_and_aggregate_does_not_run(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A chunk longer than every episode: refused when planned, before any fold; no XComNotFound."""
        monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(tmp_path))
        run = dagbag.get_dag(DAG_ID).test(
            run_conf={"dataset_root": str(demo_root), "k": 2, **TINY, "chunk_size": 900}
        )
        states = task_states(run)
        assert states[("kfold_cv.plan", -1)] == "failed"
        assert states[("kfold_cv.aggregate", -1)] == "upstream_failed"
        assert not any(task == "kfold_cv.train_fold" and s == "success" for (task, _), s in states.items())
        assert not list(tmp_path.rglob("result.json"))

    def test_folds_logging_to_wandb_get_the_key_from_the_airflow_connection(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from kfold_cv import local_folds

        monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(tmp_path))
        monkeypatch.setenv(
            "AIRFLOW_CONN_WANDB_DEFAULT", json.dumps({"conn_type": "generic", "password": W_KEY})
        )
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        monkeypatch.setattr(local_folds, "BODY", f"{__name__}:train_fold_seeing_the_key")
        KEYS_SEEN.clear()
        dag = dagbag.get_dag(DAG_ID)

        run = dag.test(run_conf={"dataset_root": str(demo_root), "k": 2, "wandb_mode": "offline", **TINY})

        assert run.state == "success", task_states(run)
        assert KEYS_SEEN == [W_KEY, W_KEY]
        assert "WANDB_API_KEY" not in os.environ, "the key is only set while a fold trains"
        summary = xcom_values(run, "kfold_cv.aggregate")[-1]
        for fold_id in range(2):
            fold_dir = tmp_path / summary["run_folder"] / "folds" / f"fold_{fold_id:03d}"
            assert list((fold_dir / "wandb").glob("offline-run-*")), "wandb logged the fold (offline)"
        assert W_KEY not in json.dumps([xcom_values(run, "kfold_cv.train_fold"), summary])

    def test_wandb_online_without_a_key_fails_in_validate(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(tmp_path))
        monkeypatch.delenv("AIRFLOW_CONN_WANDB_DEFAULT", raising=False)
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
        dag = dagbag.get_dag(DAG_ID)

        run = dag.test(run_conf={"dataset_root": str(demo_root), "k": 2, "wandb_mode": "online", **TINY})

        states = task_states(run)
        assert run.state == "failed"
        assert states[("kfold_cv.validate", -1)] == "failed"
        assert states[("kfold_cv.prepare_dataset", -1)] == "upstream_failed"


# Two candidates on the same 2 folds, a hold-out of 3 of the 12 episodes, the chosen one refit and tested.
CANDIDATES = {"small": {}, "slow_lr": {"learning_rate": 0.0003}}
COMPARE = {
    "k": 2,
    "holdout_fraction": 0.25,
    "candidates": json.dumps(CANDIDATES),
    "refit": True,
    "sim_eval_episodes": 1,
    "sim_eval_max_steps": 10,
    **TINY,
}
LABELS = {0: "small / fold 0", 1: "small / fold 1", 2: "slow_lr / fold 0", 3: "slow_lr / fold 1"}


def _check_comparison(storage: Path, run) -> dict[str, Any]:
    """Paired folds, a comparison of both candidates, the refit's final test and its model on storage."""
    folds = xcom_values(run, "kfold_cv.train_fold")
    assert sorted(folds) == [0, 1, 2, 3] and all(f["status"] == "ok" for f in folds.values())
    assert rendered_map_indexes(run, "kfold_cv.train_fold") == LABELS
    summary = xcom_values(run, "kfold_cv.final_summary")[-1]
    assert xcom_values(run, "kfold_cv.summary")[-1] == summary, "the run's summary: the final one"
    first = xcom_values(run, "kfold_cv.aggregate")[-1]
    run_dir = storage / summary["run_folder"]
    plan = json.loads((run_dir / "plan.json").read_text())
    for fold in plan["folds"]:
        seen = [
            json.loads((run_dir / "folds" / name / f"fold_{fold['fold_id']:03d}" / "result.json").read_text())
            for name in CANDIDATES
        ]
        assert [r["train_episodes"] for r in seen] == [fold["train_episodes"]] * 2, "paired folds"
    comparison = summary["comparison"]
    assert [c["name"] for c in comparison["candidates"]] == list(CANDIDATES)
    chosen = comparison["selection"]["chosen"]
    assert summary["candidate"] == chosen == first["candidate"]
    assert comparison == first["comparison"], "the refit changes nothing of the comparison"
    assert {c["metric"] for c in comparison["comparisons"]} >= {"val_l1", "sim_success_rate"}
    test = summary["final_test"]
    assert (test["candidate"], test["n_test_episodes"], test["n_train_episodes"]) == (chosen, 3, 9)
    assert sorted(plan["holdout"]["episodes"]) == sorted(
        json.loads((storage / test["result_file"]).read_text())["val_episodes"]
    )
    assert (storage / test["model_path"] / "model.safetensors").is_file()
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["final_test"] == test
    # The run's cost counts every call it paid for: 2 candidates x 2 folds and the refit.
    assert summary["cost"]["n_folds"] == 5 and on_disk["cost"] == summary["cost"]
    return summary


class TestCandidates:
    def test_two_candidates_on_the_same_folds_then_the_chosen_one_refit_and_tested(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from kfold_cv.task_group import headline

        storage = tmp_path / "storage"
        monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(storage))
        run = dagbag.get_dag(DAG_ID).test(
            run_conf={"dataset_root": str(demo_root), "backend": "local", **COMPARE}
        )

        assert run.state == "success", task_states(run)
        summary = _check_comparison(storage, run)
        extra = headline(summary)
        assert extra["model_path"] == summary["final_test"]["model_path"]
        assert extra["candidate"] == summary["candidate"]

    @pytest.mark.parametrize(
        ("candidates", "match"),
        [
            pytest.param({"a": {"k": 3}}, "may not vary", id="split-setting"),
            pytest.param({"a": {"chunk_sise": 3}}, "chunk_size", id="unknown-setting"),
            pytest.param('{"a": {"steps": 2}, "a": {"steps": 3}}', "twice", id="duplicate-name"),
        ],
    )
    def test_a_bad_candidate_spec_fails_in_validate_before_any_spend(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, candidates, match
    ) -> None:
        monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(tmp_path))
        text = candidates if isinstance(candidates, str) else json.dumps(candidates)

        run = dagbag.get_dag(DAG_ID).test(
            run_conf={"dataset_root": str(demo_root), "candidates": text, **TINY}
        )

        states = task_states(run)
        assert run.state == "failed"
        assert states[("kfold_cv.validate", -1)] == "failed"
        assert states[("kfold_cv.prepare_dataset", -1)] == "upstream_failed"
        from kfold_cv.settings import CVSettings

        with pytest.raises(ValueError, match=match):  # what validate raised
            CVSettings.from_mapping({"dataset_root": str(demo_root), "candidates": text})


@contextlib.contextmanager
def _fake_modal(tmp_path: Path, storage: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fake Modal control plane serving the app's functions on ``storage``, the client pointed at it."""
    import modal

    from scripts.fake_modal.control_plane import FakeModalControlPlane

    plane = FakeModalControlPlane(
        APP_FUNCTIONS,
        tmp_path / "plane",
        env={"LEROBOT_KFOLD_STORAGE": str(storage), "HF_HUB_OFFLINE": "1"},
    )
    with plane:
        for name, value in plane.client_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv(
            "AIRFLOW_CONN_MODAL_DEFAULT",
            json.dumps({"conn_type": "modal", "login": "ak-fake", "password": "as-fake"}),
        )
        modal.Client._set_env_client(None)
        yield plane


def _fast_polling(dag: Any) -> Any:
    """Poll the fake often (the DAG's defaults suit real GPUs). dag.test() runs triggers inline, so the
    first check need not wait out Airflow's defer-exit race."""
    for task in dag.tasks:
        if hasattr(task, "poll_interval"):
            task.poll_interval, task.first_check_after = 0.2, 0.0
        elif hasattr(task, "partial_kwargs") and "poll_interval" in task.partial_kwargs:
            task.partial_kwargs.update(poll_interval=0.2, first_check_after=0.0)
    return dag


class TestModalBackend:
    def test_spawns_one_gpu_call_per_fold_and_summarizes_their_results(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        storage = tmp_path / "volume"
        with _fake_modal(tmp_path, storage, monkeypatch) as plane:
            dag = _fast_polling(dagbag.get_dag(DAG_ID))
            run = dag.test(
                run_conf={
                    "dataset_root": str(demo_root),
                    "k": 3,
                    "backend": "modal",
                    "gpu": "H100",
                    "timeout_s": 900,
                    **TINY,
                }
            )
            spawns = plane.spawns()

        assert run.state == "success", task_states(run)
        by_function: dict[str, list[dict[str, Any]]] = {}
        for spawn in spawns:
            by_function.setdefault(spawn["function"], []).append(spawn)
        assert {name: len(calls) for name, calls in by_function.items()} == {
            "prepare_dataset": 1,
            "train_fold": 3,
            "aggregate": 1,
        }
        assert {(s["gpu"], s["timeout"]) for s in by_function["train_fold"]} == {("H100", 900)}
        call_ids = xcom_values(run, "kfold_cv.train_fold", key="modal_call_id")
        assert sorted(call_ids.values()) == sorted(s["call_id"] for s in by_function["train_fold"])
        folds = xcom_values(run, "kfold_cv.train_fold")
        summary = xcom_values(run, "kfold_cv.aggregate")[-1]
        _check_summary_against_folds(summary, folds, k=3)
        _check_files(storage, summary, demo_root, k=3)
        # Priced at the requested H100's rate, from the wall time each fold's call measured.
        assert summary["cost"]["priced_gpus"] == ["H100"] and summary["cost"]["n_priced"] == 3
        assert summary["cost"]["total_usd"] == pytest.approx(
            sum(f["cost"]["usd"] for f in folds.values()), abs=1e-5
        )

    def test_an_app_that_is_not_deployed_fails_validate_without_spawning(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import modal

        from scripts.fake_modal.control_plane import FakeModalControlPlane

        with FakeModalControlPlane({}, tmp_path / "plane") as plane:
            for name, value in plane.client_env().items():
                monkeypatch.setenv(name, value)
            modal.Client._set_env_client(None)
            run = dagbag.get_dag(DAG_ID).test(
                run_conf={"dataset_root": str(demo_root), "backend": "modal", **TINY}
            )
            spawns = plane.spawns()

        assert run.state == "failed"
        assert task_states(run)[("kfold_cv.validate", -1)] == "failed"
        assert spawns == [], "nothing may be launched before validation passes"

    def test_candidates_and_the_refit_run_as_modal_calls(
        self, dagbag, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        storage = tmp_path / "volume"
        with _fake_modal(tmp_path, storage, monkeypatch) as plane:
            dag = _fast_polling(dagbag.get_dag(DAG_ID))
            conf = {
                "dataset_root": str(demo_root),
                "backend": "modal",
                "gpu": "L4",
                "timeout_s": 900,
                **COMPARE,
            }
            run = dag.test(run_conf=conf)
            spawns = plane.spawns()

        assert run.state == "success", task_states(run)
        counts: dict[str, int] = {}
        for spawn in spawns:
            counts[spawn["function"]] = counts.get(spawn["function"], 0) + 1
        # 2 candidates x 2 folds and the refit on the fold function; the summary before and after the refit.
        assert counts == {"prepare_dataset": 1, "train_fold": 5, "aggregate": 2}
        summary = _check_comparison(storage, run)
        # The cost is the run's: every candidate's folds and the refit, not only the chosen candidate's.
        folds = xcom_values(run, "kfold_cv.train_fold")
        refit = xcom_values(run, "kfold_cv.refit")[-1]
        paid = [f["cost"]["usd"] for f in [*folds.values(), refit]]
        assert summary["cost"]["n_priced"] == 5
        assert summary["cost"]["total_usd"] == pytest.approx(sum(paid), abs=1e-5)
