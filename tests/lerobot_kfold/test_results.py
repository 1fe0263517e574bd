"""Tests for lerobot_kfold.results: fold results and summaries round-trip through their JSON form and
refuse, with a message naming the problem, anything that is not one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lerobot_kfold.aggregate import AggregateConfig, summarize
from lerobot_kfold.results import CVSummary, FoldResult, json_safe


def trained(fold_id: int = 0, **changes: Any) -> FoldResult:
    """A result shaped like the trainer's, every field filled."""
    result = FoldResult(
        fold_id=fold_id,
        repeat=0,
        index=fold_id,
        status="ok",
        train_episodes=[3, 4, 5],
        val_episodes=[0, 1],
        steps=12,
        steps_this_run=6,
        resumed_from_step=6,
        wall_s=3.25,
        train_seconds=2.5,
        steps_per_s=4.8,
        device="cpu",
        final_train_loss=0.125,
        metrics={"val_l1": 0.1, "val_l1_normalized": 0.4, "best_val_l1": 0.09, "sim_success_rate": 0.5},
        val_mae_per_dim=[0.1, 0.2, 0.05, 0.05],
        best_step=8,
        best_val_mae_per_dim=[0.09, 0.2, 0.04, 0.03],
        learning_curve=[{"step": 4, "train_loss": 0.5, "val_l1": 0.2, "val_l1_normalized": 0.8}],
        checkpoints={"last": "/out/checkpoints/000012", "best": "/out/best/pretrained_model"},
        output_dir="/out",
        resume_key={"steps": 12, "seed": 0},
        sim={"sim_success_rate": 0.5, "sim_seeds": [100, 101], "sim_successes": [True, False]},
    )
    return dataclasses.replace(result, **changes)


class TestFoldResultJson:
    def test_a_trained_result_round_trips_exactly_through_json(self):
        result = trained()
        text = json.dumps(result.to_dict(), allow_nan=False)
        assert FoldResult.from_dict(json.loads(text)) == result

    def test_result_json_keeps_the_keys_readers_have_always_used(self):
        keys = set(trained().to_dict())
        assert {
            "fold_id", "repeat", "index", "status", "error", "train_episodes", "val_episodes", "steps",
            "steps_this_run", "resumed_from_step", "wall_s", "train_seconds", "steps_per_s", "device",
            "final_train_loss", "metrics", "val_mae_per_dim", "best_step", "best_val_mae_per_dim",
            "learning_curve", "checkpoints", "output_dir", "resume_key", "sim",
        } <= keys  # fmt: skip

    def test_to_dict_is_a_copy(self):
        result = trained()
        as_dict = result.to_dict()
        as_dict["metrics"]["val_l1"] = 99.0
        as_dict["learning_curve"].clear()
        assert result.metrics["val_l1"] == 0.1 and result.learning_curve

    def test_a_minimal_foreign_result_takes_defaults(self):
        result = FoldResult.from_dict({"fold_id": 2, "status": "ok", "metrics": {"val_l1": 0.3}, "extra": 1})
        assert (result.fold_id, result.ok, result.metrics) == (2, True, {"val_l1": 0.3})
        assert (result.repeat, result.steps, result.learning_curve, result.checkpoints) == (
            None,
            None,
            [],
            {},
        )

    def test_only_real_numbers_count_as_metrics(self):
        metrics = {
            "val_l1": np.float32(0.5),
            "episodes": np.int64(10),
            "note": "text",
            "flag": True,
            "d": [1],
        }
        result = FoldResult.from_dict({"fold_id": 0, "status": "ok", "metrics": metrics})
        assert result.metrics == {"val_l1": 0.5, "episodes": 10.0}
        assert all(type(v) is float for v in result.metrics.values())

    def test_nan_metrics_are_kept_for_aggregation_to_report(self):
        result = FoldResult.from_dict({"fold_id": 0, "status": "ok", "metrics": {"val_l1": float("nan")}})
        assert np.isnan(result.metrics["val_l1"])


class TestFailedFold:
    def test_failed_constructor(self):
        result = FoldResult.failed(3, 1, 0, "RuntimeError: CUDA out of memory", "Traceback ...")
        assert (result.fold_id, result.repeat, result.index) == (3, 1, 0)
        assert (result.status, result.ok) == ("failed", False)
        assert (result.error, result.traceback) == ("RuntimeError: CUDA out of memory", "Traceback ...")
        assert result.metrics == {} and result.steps is None

    def test_error_json_round_trips_and_keeps_its_keys(self):
        result = FoldResult.failed(3, None, None, "boom")
        data = result.to_dict()
        assert {k: data[k] for k in ("fold_id", "repeat", "index", "status", "error", "traceback")} == {
            "fold_id": 3,
            "repeat": None,
            "index": None,
            "status": "failed",
            "error": "boom",
            "traceback": None,
        }
        assert FoldResult.from_dict(data) == result


class TestMalformedResults:
    @pytest.mark.parametrize(
        ("data", "match"),
        [
            pytest.param([1, 2], "must be a JSON object, got list", id="not-an-object"),
            pytest.param({"status": "ok"}, "no 'fold_id'", id="no-fold-id"),
            pytest.param({"fold_id": 0}, "no 'status'", id="no-status"),
            pytest.param({"fold_id": "0", "status": "ok"}, "'fold_id' must be an integer", id="text-fold-id"),
            pytest.param(
                {"fold_id": True, "status": "ok"}, "'fold_id' must be an integer", id="bool-fold-id"
            ),
            pytest.param({"fold_id": 0, "status": ""}, "'status' must be a non-empty", id="empty-status"),
            pytest.param(
                {"fold_id": 0, "status": "ok", "metrics": [1]}, "'metrics' must be an object", id="m"
            ),
            pytest.param(
                {"fold_id": 0, "status": "ok", "steps": 1.5}, "'steps' must be an integer", id="steps"
            ),
            pytest.param(
                {"fold_id": 0, "status": "ok", "wall_s": "1s"}, "'wall_s' must be a number", id="wall"
            ),
            pytest.param(
                {"fold_id": 0, "status": "ok", "val_episodes": [0, "a"]},
                "'val_episodes' must be a list",
                id="eps",
            ),
            pytest.param(
                {"fold_id": 0, "status": "ok", "learning_curve": [1]}, "'learning_curve' must be", id="curve"
            ),
        ],
    )
    def test_raise_a_value_error_naming_the_problem_and_the_source(self, data, match):
        with pytest.raises(ValueError, match=match) as info:
            FoldResult.from_dict(data, source="runs/x/folds/fold_000/result.json")
        assert str(info.value).startswith("runs/x/folds/fold_000/result.json: ")

    def test_direct_construction_checks_too(self):
        with pytest.raises(ValueError, match="'repeat' must be an integer or null"):
            FoldResult(fold_id=0, status="ok", repeat="first")

    def test_a_file_that_is_not_json_is_named(self, tmp_path: Path):
        path = tmp_path / "result.json"
        path.write_text("{not json")
        with pytest.raises(ValueError, match=r"result\.json: not valid JSON"):
            FoldResult.from_json_file(path)

    def test_a_file_without_fold_id_gets_the_one_its_folder_names(self, tmp_path: Path):
        path = tmp_path / "error.json"
        path.write_text(json.dumps({"status": "failed", "error": "OOM"}))
        with pytest.raises(ValueError, match="no 'fold_id'"):
            FoldResult.from_json_file(path)
        assert FoldResult.from_json_file(path, fold_id=4).fold_id == 4


def _summary() -> CVSummary:
    results = [
        trained(0),
        trained(1, metrics={"val_l1": 0.3, "sim_success_rate": np.float64(0.25)}, wall_s=float("nan")),
        FoldResult.failed(2, 0, 2, "boom"),
    ]
    return summarize(results, AggregateConfig(min_successful_folds=2), expected_folds=4, run_id="r")


class TestJsonSafe:
    def test_numpy_to_python_and_non_finite_to_none(self):
        value = {"a": np.float32(0.5), "b": (np.int64(2), float("inf")), "c": np.bool_(True), 1: "x"}
        assert json_safe(value) == {"a": 0.5, "b": [2, None], "c": True, "1": "x"}


class TestSummaryJson:
    def test_round_trips_through_json(self):
        summary = dataclasses.replace(
            _summary(), plan_hash="h", dataset={"repo_id": "local/demo", "fingerprint": "f"}, wall_s=12.5
        )
        text = json.dumps(summary.to_dict(), allow_nan=False)
        assert CVSummary.from_dict(json.loads(text)) == summary

    def test_keys_of_summary_json(self):
        data = _summary().to_dict()
        assert list(data) == [
            "run_id",
            "config",
            "totals",
            "metrics",
            "best_fold",
            "failed_folds",
            "folds",
            "warnings",
            "success_rates",
            "intervals",
        ]
        assert list(data["metrics"]["val_l1"]) == [
            "n",
            "mean",
            "std",
            "sem",
            "ci_low",
            "ci_high",
            "ci_half_width",
            "min",
            "max",
            "missing_fold_ids",
            "corrected_ci_low",
            "corrected_ci_high",
            "corrected_ci_half_width",
        ]
        assert data["folds"][1]["wall_s"] is None  # NaN never reaches JSON
        assert data["failed_folds"][-1] == {
            "fold_id": 3,
            "repeat": None,
            "index": None,
            "error": "no result",
            "last_progress": None,
        }

    def test_extras_appear_once_known_and_the_compact_form_leaves_out_the_rows(self):
        summary = dataclasses.replace(_summary(), run_folder="runs/d/r", outputs={"summary_json": "/s.json"})
        compact = summary.to_dict(include_folds=False)
        assert "folds" not in compact
        assert (compact["run_folder"], compact["outputs"]) == ("runs/d/r", {"summary_json": "/s.json"})
        assert "plan_hash" not in compact and "wall_s" not in compact
        assert CVSummary.from_dict(compact).folds == []

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            pytest.param("text", "must be a JSON object", id="not-an-object"),
            pytest.param({"config": {}}, "no 'totals'", id="no-totals"),
            pytest.param(
                {"config": {}, "totals": {}, "metrics": {}, "best_fold": {}},
                "Totals entry has no",
                id="empty-totals",
            ),
        ],
    )
    def test_malformed_summary_raises_value_error(self, data, match):
        with pytest.raises(ValueError, match=match):
            CVSummary.from_dict(data, source="summary.json")
