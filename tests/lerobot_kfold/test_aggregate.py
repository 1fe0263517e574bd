"""Tests for lerobot_kfold.aggregate: statistics against hand-computed numbers, failure handling, outputs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lerobot_kfold import aggregate
from lerobot_kfold.aggregate import (
    AggregateConfig,
    MissingMetricError,
    NotEnoughFoldsError,
    summarize,
    write_outputs,
)
from lerobot_kfold.results import BestFold, FailedFold, FoldResult


def fold(fold_id: int, status: str = "ok", *, repeat: int = 0, k: int = 100, **metrics: Any) -> FoldResult:
    """A fold result as read from a fold trainer's result.json; failed ones carry only ids and the error."""
    if status != "ok":
        return FoldResult.from_dict(
            {
                "fold_id": fold_id,
                "repeat": repeat,
                "index": fold_id % k,
                "status": status,
                "error": metrics.get("error"),
            }
        )
    return FoldResult.from_dict(
        {
            "fold_id": fold_id,
            "repeat": repeat,
            "index": fold_id % k,
            "status": "ok",
            "error": None,
            "train_episodes": [0, 1, 2],
            "val_episodes": [3],
            "steps": 2000,
            "wall_s": 10.0 + fold_id,
            "steps_per_s": 30.0,
            "device": "cpu",
            "final_train_loss": 0.1,
            "metrics": metrics,
            "val_mae_per_dim": [0.1, 0.2],
            "best_step": 1500,
            "learning_curve": [{"step": 500, "train_loss": 0.3, "val_l1": 0.02}],
            "checkpoints": {"last": f"/ckpt/{fold_id}/last", "best": f"/ckpt/{fold_id}/best"},
        }
    )


def folds_with(values: list[float], name: str = "val_l1") -> list[FoldResult]:
    return [fold(i, **{name: v}) for i, v in enumerate(values)]


class TestConfig:
    def test_defaults(self):
        cfg = AggregateConfig()
        assert (cfg.selection_metric, cfg.selection_mode, cfg.min_successful_folds, cfg.confidence) == (
            "val_l1",
            "min",
            0,
            0.95,
        )
        assert cfg.required_folds(5) == 5, "0 means every fold"

    def test_the_direction_follows_the_metric(self):
        assert AggregateConfig(selection_metric="sim_success_rate").selection_mode == "max"
        assert AggregateConfig(selection_metric="best_val_l1").selection_mode == "min"

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            pytest.param({"selection_metric": ""}, "selection_metric must be one of", id="empty-metric"),
            pytest.param({"selection_metric": "val_l2"}, "selection_metric must be one of", id="unknown"),
            pytest.param({"min_successful_folds": -1}, "at least 0", id="min-folds-negative"),
            pytest.param({"min_successful_folds": True}, "an integer", id="min-folds-bool"),
            pytest.param({"min_successful_folds": 2.5}, "an integer", id="min-folds-float"),
            pytest.param({"confidence": 1.0}, "less than 1", id="confidence-one"),
            pytest.param({"confidence": 0.0}, "greater than 0", id="confidence-zero"),
            pytest.param({"confidence": 95}, "less than 1", id="confidence-percent"),
            pytest.param({"confidence": float("nan")}, "finite number", id="confidence-nan"),
        ],
    )
    def test_invalid_values_raise_with_hint(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            AggregateConfig(**kwargs)


class TestStatistics:
    def test_hand_computed_four_folds(self):
        s = summarize(folds_with([1.0, 2.0, 3.0, 4.0]), AggregateConfig())
        m = s.metrics["val_l1"]
        # mean = 10 / 4 = 2.5
        # squared deviations: 2.25 + 0.25 + 0.25 + 2.25 = 5; sample variance = 5 / 3
        std = math.sqrt(5 / 3)  # 1.2909944
        sem = std / math.sqrt(4)  # 0.6454972
        t_975_df3 = 3.182446  # Student-t table: two-sided 95%, 3 degrees of freedom
        half = t_975_df3 * sem  # 2.054271
        assert m.n == 4
        assert m.mean == pytest.approx(2.5)
        assert m.std == pytest.approx(1.2909944, abs=1e-7)
        assert std == pytest.approx(1.2909944, abs=1e-7)
        assert m.sem == pytest.approx(0.6454972, abs=1e-7)
        assert m.ci_half_width == pytest.approx(half, rel=1e-6)
        assert m.ci_half_width == pytest.approx(2.0543, abs=1e-4)
        assert m.ci_low == pytest.approx(2.5 - half, rel=1e-6)
        assert m.ci_high == pytest.approx(2.5 + half, rel=1e-6)
        assert (m.min, m.max) == (1.0, 4.0)
        assert m.missing_fold_ids == []

    def test_other_confidence_level(self):
        # 90%: t_{0.95, 3} = 2.353363 from the table.
        s = summarize(folds_with([1.0, 2.0, 3.0, 4.0]), AggregateConfig(confidence=0.9))
        assert s.metrics["val_l1"].ci_half_width == pytest.approx(2.353363 * 0.6454972, rel=1e-6)

    def test_single_fold_has_no_spread(self):
        s = summarize(folds_with([0.5]), AggregateConfig())
        m = s.metrics["val_l1"]
        assert (m.n, m.mean, m.min, m.max) == (1, 0.5, 0.5, 0.5)
        for key in ("std", "sem", "ci_low", "ci_high", "ci_half_width"):
            assert getattr(m, key) is None, key

    def test_identical_values_give_zero_width_interval(self):
        m = summarize(folds_with([0.2, 0.2, 0.2]), AggregateConfig()).metrics["val_l1"]
        assert m.std == 0.0
        assert m.ci_low == m.ci_high == pytest.approx(0.2)

    def test_metric_missing_in_some_folds_reports_its_n(self):
        results = [
            fold(0, val_l1=1.0, sim_success_rate=0.2),
            fold(1, val_l1=2.0),
            fold(2, val_l1=3.0, sim_success_rate=0.4),
        ]
        s = summarize(results, AggregateConfig())
        sim = s.metrics["sim_success_rate"]
        assert sim.n == 2
        assert sim.mean == pytest.approx(0.3)
        assert sim.missing_fold_ids == [1]
        assert s.metrics["val_l1"].n == 3
        assert any("sim_success_rate" in w and "2 of 3" in w for w in s.warnings)

    @pytest.mark.parametrize(
        "bad", [pytest.param(float("nan"), id="nan"), pytest.param(float("inf"), id="inf")]
    )
    def test_non_finite_value_is_left_out_visibly(self, bad):
        s = summarize(folds_with([1.0, bad, 3.0]), AggregateConfig())
        m = s.metrics["val_l1"]
        assert (m.n, m.mean, m.missing_fold_ids) == (2, 2.0, [1])
        assert s.folds[1].metrics["val_l1"] is None
        assert s.warnings

    def test_non_scalar_metrics_are_ignored(self):
        results = [fold(i, val_l1=float(i), note="text", per_dim=[1, 2], flag=True) for i in range(2)]
        assert list(summarize(results, AggregateConfig()).metrics) == ["val_l1"]

    def test_selection_metric_listed_first(self):
        results = [fold(i, a=1.0, sim_success_rate=0.5, val_l1=float(i)) for i in range(2)]
        assert list(summarize(results, AggregateConfig()).metrics) == ["val_l1", "a", "sim_success_rate"]

    def test_repeats_add_independence_warning(self):
        results = [fold(i, repeat=i // 2, k=2, val_l1=float(i)) for i in range(4)]
        s = summarize(results, AggregateConfig())
        assert s.totals.n_repeats == 2
        assert any("not independent" in w for w in s.warnings)


class TestBestFold:
    @pytest.mark.parametrize(
        ("metric", "mode", "best_id", "best_value"),
        [
            pytest.param("val_l1", "min", 2, 0.1, id="min-val-l1"),
            pytest.param("sim_success_rate", "max", 0, 0.6, id="max-success"),
        ],
    )
    def test_best_fold_by_metric_and_mode(self, metric, mode, best_id, best_value):
        results = [
            fold(0, val_l1=0.3, sim_success_rate=0.6),
            fold(1, val_l1=0.2, sim_success_rate=0.1),
            fold(2, val_l1=0.1, sim_success_rate=0.3),
        ]
        s = summarize(results, AggregateConfig(selection_metric=metric))
        assert s.best_fold == BestFold(
            fold_id=best_id, repeat=0, index=best_id, metric=metric, mode=mode, value=best_value
        )

    def test_tie_goes_to_lowest_fold_id(self):
        s = summarize([fold(3, val_l1=0.1), fold(1, val_l1=0.1), fold(2, val_l1=0.5)], AggregateConfig())
        assert s.best_fold.fold_id == 1


class TestFailedFolds:
    def test_failed_folds_listed_with_errors(self):
        results = [fold(0, val_l1=1.0), fold(1, "failed", error="CUDA out of memory"), fold(2, val_l1=3.0)]
        s = summarize(results, AggregateConfig(min_successful_folds=2))
        assert s.failed_folds == [FailedFold(fold_id=1, repeat=0, index=1, error="CUDA out of memory")]
        t = s.totals
        assert (t.n_folds, t.n_succeeded, t.n_failed, t.n_missing, t.n_repeats) == (3, 2, 1, 0, 1)
        assert t.total_wall_s == pytest.approx(10.0 + 12.0)
        assert s.metrics["val_l1"].n == 2
        assert [r.status for r in s.folds] == ["ok", "failed", "ok"]

    def test_failed_fold_without_message_gets_one(self):
        s = summarize([fold(0, val_l1=1.0), fold(1, "failed")], AggregateConfig(min_successful_folds=1))
        assert "failed" in s.failed_folds[0].error

    @pytest.mark.parametrize(
        ("min_ok", "required"),
        [pytest.param(0, 3, id="default-all-folds"), pytest.param(3, 3, id="explicit-three")],
    )
    def test_too_few_successes_raise(self, min_ok, required):
        results = [fold(0, val_l1=1.0), fold(1, "failed", error="boom: disk full"), fold(2, val_l1=3.0)]
        with pytest.raises(NotEnoughFoldsError) as info:
            summarize(results, AggregateConfig(min_successful_folds=min_ok))
        msg = str(info.value)
        assert f"only 2 of 3 folds succeeded, but {required} are required" in msg
        assert "fold 1: boom: disk full" in msg
        assert isinstance(info.value, ValueError)
        assert (info.value.n_succeeded, info.value.n_required) == (2, required)

    def test_missing_expected_folds_count_as_failed(self):
        results = [fold(0, val_l1=1.0), fold(2, val_l1=3.0)]
        s = summarize(results, AggregateConfig(min_successful_folds=2), expected_folds=4)
        assert s.failed_folds == [
            FailedFold(fold_id=1, repeat=None, index=None, error="no result"),
            FailedFold(fold_id=3, repeat=None, index=None, error="no result"),
        ]
        assert (s.totals.n_folds, s.totals.n_failed, s.totals.n_missing) == (4, 2, 2)
        assert [r.status for r in s.folds] == ["ok", "missing", "ok", "missing"]

    def test_missing_expected_folds_trip_the_default_rule(self):
        with pytest.raises(NotEnoughFoldsError, match=r"(?s)only 2 of 3 .*fold 2: no result"):
            summarize([fold(0, val_l1=1.0), fold(1, val_l1=2.0)], AggregateConfig(), expected_folds=3)

    def test_long_error_is_truncated_in_summary(self):
        s = summarize(
            [fold(0, val_l1=1.0), fold(1, "failed", error="x" * 10_000)],
            AggregateConfig(min_successful_folds=1),
        )
        assert len(s.failed_folds[0].error) < 2100

    @pytest.mark.parametrize(
        ("results", "kwargs", "match"),
        [
            pytest.param([], {}, "no fold results", id="empty"),
            pytest.param([fold(0, val_l1=1.0), fold(0, val_l1=2.0)], {}, "two results", id="duplicate"),
            pytest.param([fold(5, val_l1=1.0)], {"expected_folds": 3}, "outside", id="out-of-range"),
            pytest.param([fold(0, val_l1=1.0)], {"expected_folds": 0}, "expected_folds", id="bad-expected"),
        ],
    )
    def test_malformed_input(self, results, kwargs, match):
        with pytest.raises(ValueError, match=match):
            summarize(results, AggregateConfig(), **kwargs)

    def test_dicts_must_be_read_into_fold_results_first(self):
        with pytest.raises(TypeError, match=r"FoldResult\.from_dict"):
            summarize([{"fold_id": 0, "status": "ok", "metrics": {"val_l1": 1.0}}], AggregateConfig())


class TestSteps:
    """The steps summarize is made of, each on its own."""

    def test_index_results_by_fold_id_and_list_the_expected_ids_without_one(self):
        by_id, missing = aggregate.index_results([fold(2, val_l1=1.0), fold(0, val_l1=2.0)], expected_folds=4)
        assert sorted(by_id) == [0, 2]
        assert by_id[2].metrics == {"val_l1": 1.0}
        assert missing == [1, 3]

    def test_classify_folds_gives_one_row_per_fold_and_splits_failed_from_succeeded(self):
        results = {0: fold(0, val_l1=float("nan")), 1: fold(1, "interrupted"), 3: fold(3, val_l1=0.5)}
        folds = aggregate.classify_folds(results, missing_ids=[2])
        assert [(r.fold_id, r.status) for r in folds.rows] == [
            (0, "ok"),
            (1, "interrupted"),
            (2, "missing"),
            (3, "ok"),
        ]
        assert folds.succeeded == [0, 3]
        assert [(f.fold_id, f.error) for f in folds.failed] == [
            (1, "status 'interrupted' without an error message"),
            (2, "no result"),
        ]
        assert folds.values("val_l1") == [(0, None), (3, 0.5)]  # NaN is no value

    def test_metric_names_put_the_selection_metric_first(self):
        folds = aggregate.classify_folds({0: fold(0, a=1.0, b=2.0), 1: fold(1, c=3.0, b=1.0)}, [])
        assert aggregate.metric_names(folds, "b") == ["b", "a", "c"]

    def test_metric_statistics_skip_a_metric_without_any_finite_value_and_say_so(self):
        folds = aggregate.classify_folds({0: fold(0, a=1.0, b=float("inf")), 1: fold(1, a=3.0)}, [])
        stats, warnings = aggregate.metric_statistics(["a", "b"], folds, 0.95)
        assert list(stats) == ["a"]
        assert (stats["a"].n, stats["a"].mean) == (2, 2.0)
        assert warnings == ["metric 'b' is NaN or infinite in every successful fold; not aggregated"]

    def test_best_fold_of_the_successful_folds(self):
        folds = aggregate.classify_folds(
            {0: fold(0, val_l1=0.2), 1: fold(1, val_l1=0.1), 2: fold(2, "failed")}, []
        )
        folds.rows[0].metrics["sim_success_rate"], folds.rows[1].metrics["sim_success_rate"] = 0.7, 0.2
        assert aggregate.best_fold(folds, AggregateConfig(selection_metric="sim_success_rate")).fold_id == 0
        assert aggregate.best_fold(folds, AggregateConfig()).value == 0.1

    def test_count_totals(self):
        folds = aggregate.classify_folds({0: fold(0, val_l1=0.2), 3: fold(3, "failed", repeat=1)}, [1, 2])
        totals = aggregate.count_totals(folds, n_missing=2)
        assert (totals.n_folds, totals.n_succeeded, totals.n_failed, totals.n_missing) == (4, 1, 3, 2)
        assert (totals.n_repeats, totals.total_wall_s) == (2, 10.0)


class TestSelectionMetric:
    def test_absent_everywhere_lists_available_metrics(self):
        results = [fold(i, val_l1=1.0, sim_success_rate=0.5) for i in range(2)]
        with pytest.raises(
            MissingMetricError, match=r"'best_val_l1'.*available metrics: sim_success_rate, val_l1"
        ):
            summarize(results, AggregateConfig(selection_metric="best_val_l1"))

    def test_present_only_in_failed_fold_is_absent(self):
        results = [fold(0, a=1.0), dataclasses.replace(fold(1, val_l1=1.0), status="failed", error="x")]
        with pytest.raises(MissingMetricError):
            summarize(results, AggregateConfig(min_successful_folds=1))


class TestJsonSafety:
    def test_summary_dumps_strictly_and_stays_small(self):
        results = [
            fold(0, val_l1=np.float32(0.5), sim_success_rate=np.float64(0.2), episodes=np.int64(10)),
            fold(1, val_l1=float("nan"), sim_success_rate=0.4, episodes=10),
            fold(2, val_l1=0.7, sim_success_rate=0.0, episodes=10),
            fold(3, "failed", error="boom"),
        ]
        s = summarize(results, AggregateConfig(min_successful_folds=2), run_id="run-1")
        text = json.dumps(s.to_dict(), allow_nan=False)
        assert json.loads(text) == s.to_dict()
        assert "learning_curve" not in text and "checkpoints" not in text and "/ckpt/" not in text
        assert type(s.metrics["episodes"].mean) is float
        assert s.run_id == "run-1"
        assert s.to_dict()["config"] == {
            "selection_metric": "val_l1",
            "selection_mode": "min",
            "min_successful_folds": 2,
            "confidence": 0.95,
        }


@pytest.fixture
def outputs_case():
    results = [
        fold(0, val_l1=1.0, sim_success_rate=0.2),
        fold(1, val_l1=2.0),
        fold(2, "failed", error="oops"),
    ]
    summary = summarize(results, AggregateConfig(min_successful_folds=2), expected_folds=4, run_id="r")
    return summary, results


class TestWriteOutputs:
    def test_writes_all_four_files(self, tmp_path, outputs_case):
        summary, results = outputs_case
        paths = write_outputs(summary, results, tmp_path / "out")
        assert set(paths) == {"summary_json", "folds_csv", "report_png", "report_html"}
        names = {Path(p).name for p in paths.values()}
        assert names == {"summary.json", "folds.csv", "report.png", "report.html"}
        assert all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in paths.values())
        assert json.loads(Path(paths["summary_json"]).read_text()) == summary.to_dict()
        df = pd.read_csv(paths["folds_csv"])
        assert list(df["fold_id"]) == [0, 1, 2, 3]
        assert list(df["status"]) == ["ok", "ok", "failed", "missing"]
        assert list(df["error"].fillna("")) == ["", "", "oops", "no result"]
        assert df.loc[0, "sim_success_rate"] == 0.2 and math.isnan(df.loc[1, "sim_success_rate"])
        assert df.loc[0, "n_train_episodes"] == 3

    def test_no_temp_files_and_old_summary_replaced_whole(self, tmp_path, outputs_case):
        summary, results = outputs_case
        old = tmp_path / "summary.json"
        old.write_text('{"old": "' + "x" * 100_000 + '"}\n')
        write_outputs(summary, results, tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "folds.csv",
            "report.html",
            "report.png",
            "summary.json",
        ]
        assert json.loads(old.read_text()) == summary.to_dict()

    def test_summary_written_last_so_a_failed_report_keeps_old_summary(
        self, tmp_path, outputs_case, monkeypatch
    ):
        summary, results = outputs_case
        old = tmp_path / "summary.json"
        old.write_text('{"old": true}\n')

        def broken(*args, **kwargs):
            raise RuntimeError("render failed")

        monkeypatch.setattr(aggregate_report(), "figure_png_bytes", broken)
        with pytest.raises(RuntimeError):
            write_outputs(summary, results, tmp_path)
        assert json.loads(old.read_text()) == {"old": True}
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def aggregate_report():
    from lerobot_kfold import report

    assert aggregate.__name__ == "lerobot_kfold.aggregate"
    return report
