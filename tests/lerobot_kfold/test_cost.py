"""``cost``: the dated price table and its override, the run's worst case and estimate, a fold's cost."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lerobot_kfold import cost
from lerobot_kfold.aggregate import AggregateConfig, summarize, write_outputs
from lerobot_kfold.cost import GpuPrice, UsageMeter, estimate_run, fold_cost, price_table, worst_case
from lerobot_kfold.report import render_html
from lerobot_kfold.results import CVSummary, FailedFold, FoldCost, FoldResult
from lerobot_kfold.summary_table import format_summary

L4 = GpuPrice(gpu="L4", count=1, usd_per_s=0.000222, as_of="2026-05-07")


class TestPriceTable:
    def test_the_default_table_is_dated_and_prices_every_gpu_per_second(self):
        table = price_table({})

        assert table.as_of == cost.PRICES_AS_OF
        assert table.price("H100") == GpuPrice(gpu="H100", count=1, usd_per_s=0.001097, as_of=table.as_of)
        assert table.per_s["T4"] < table.per_s["L4"] < table.per_s["A100"] < table.per_s["H100"]

    def test_the_deployment_overrides_prices_and_their_date(self):
        override = {"as_of": "2026-11-01", "H100": 0.002, "X9": 0.5}
        table = price_table({cost.PRICES_ENV: json.dumps(override)})

        assert (table.as_of, table.per_s["H100"], table.per_s["X9"]) == ("2026-11-01", 0.002, 0.5)
        assert table.per_s["L4"] == cost.GPU_PRICES_PER_S["L4"], "types not overridden keep their price"

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            pytest.param("{not json", "JSON object", id="not-json"),
            pytest.param("[1, 2]", "JSON object", id="not-an-object"),
            pytest.param('{"H100": -1}', "'H100' must be a number >= 0", id="negative"),
            pytest.param('{"H100": "cheap"}', "'H100' must be a number", id="text"),
        ],
    )
    def test_a_bad_override_is_refused_naming_the_variable(self, text, match):
        with pytest.raises(ValueError, match=match) as refused:
            price_table({cost.PRICES_ENV: text})
        assert cost.PRICES_ENV in str(refused.value)

    def test_an_unknown_gpu_type_says_how_to_price_it(self):
        with pytest.raises(ValueError, match=f"no price for GPU type 'TPU'.*{cost.PRICES_ENV}"):
            price_table({}).price("TPU")

    def test_a_price_travels_as_a_dict(self):
        assert GpuPrice.from_dict(json.loads(json.dumps(L4.to_dict()))) == L4


class TestBeforeTheRun:
    def test_worst_case_is_folds_times_candidates_times_timeout_times_price(self):
        assert worst_case(5, 1, 14_400, L4) == pytest.approx(5 * 14_400 * 0.000222)
        assert worst_case(5, 3, 14_400, L4) == pytest.approx(3 * worst_case(5, 1, 14_400, L4))
        two = GpuPrice(gpu="L4", count=2, usd_per_s=0.000222, as_of="x")
        assert worst_case(5, 1, 100, two) == pytest.approx(2 * worst_case(5, 1, 100, L4))

    def test_an_estimate_from_steps_only_when_the_pace_is_known(self):
        unknown = estimate_run(5, 1, 14_400, L4, steps=20_000, steps_per_s=0.0)
        known = estimate_run(5, 1, 14_400, L4, steps=20_000, steps_per_s=40.0)

        assert unknown.estimate_usd is None and "estimate" not in unknown.describe()
        assert known.seconds_per_fold == 500.0
        assert known.estimate_usd == pytest.approx(5 * 500 * 0.000222)
        assert known.worst_case_usd == unknown.worst_case_usd == pytest.approx(15.984)
        text = known.describe()
        assert "worst case $15.98 = 5 fold calls x timeout_s 14400 s x L4" in text
        assert "2026-05-07" in text and "estimate from steps $0.56" in text


class TestWhereTheFoldRuns:
    def test_a_cpu_fold_reports_cpu_seconds_and_no_dollars(self):
        meter = UsageMeter.start()
        sum(i * i for i in range(200_000))  # some CPU time

        record = fold_cost(meter, "cpu", None)

        assert record.device == "cpu" and record.accelerator is None and record.accelerator_count == 0
        assert record.wall_s > 0 and record.cpu_s > 0 and record.cpu_cores >= 1
        assert (record.gpu_s, record.usd, record.priced_gpu, record.prices_as_of) == (None, None, None, None)

    def test_a_gpu_fold_reports_the_model_it_saw_and_dollars_at_the_requested_price(self, monkeypatch):
        monkeypatch.setattr(cost, "accelerators_here", lambda: ("NVIDIA H200", 1))
        meter = UsageMeter(wall_started=0.0, cpu_started=0.0)
        monkeypatch.setattr(cost.time, "perf_counter", lambda: 1000.0)
        price = GpuPrice(gpu="H100", count=1, usd_per_s=0.001097, as_of="2026-05-07")

        record = fold_cost(meter, "cuda", price)

        # Modal may place an H100 request on an H200: the bill follows the request.
        assert (record.accelerator, record.accelerator_count, record.gpu_s) == ("NVIDIA H200", 1, 1000.0)
        assert (record.priced_gpu, record.usd) == ("H100", pytest.approx(1.097))
        assert record.prices_as_of == "2026-05-07"


def _result(fold_id: int, usd: float | None, status: str = "ok") -> FoldResult:
    fold_cost = FoldCost(
        device="cuda" if usd is not None else "cpu",
        accelerator="NVIDIA L4" if usd is not None else None,
        accelerator_count=1 if usd is not None else 0,
        wall_s=100.0,
        cpu_s=80.0,
        gpu_s=100.0 if usd is not None else None,
        priced_gpu="L4" if usd is not None else None,
        usd_per_s=0.000222 if usd is not None else None,
        usd=usd,
        prices_as_of="2026-05-07" if usd is not None else None,
    )
    return FoldResult(fold_id=fold_id, status=status, metrics={"val_l1": 0.1 + fold_id}, cost=fold_cost)


class TestInTheSummary:
    def test_the_runs_cost_adds_up_every_fold_that_reports_one_and_survives_json(self, tmp_path):
        results = [_result(0, 0.0222), _result(1, 0.0222), _result(2, 0.0111, status="interrupted")]

        summary = summarize(results, AggregateConfig(min_successful_folds=2), expected_folds=3)

        run = summary.cost
        assert (run.n_folds, run.n_priced, run.priced_gpus, run.prices_as_of) == (3, 3, ["L4"], "2026-05-07")
        assert (run.total_usd, run.total_gpu_s, run.total_cpu_s) == (pytest.approx(0.0555), 300.0, 240.0)
        again = CVSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
        assert again.cost == run and again.folds[0].cost == results[0].cost
        assert FoldResult.from_dict(json.loads(json.dumps(results[0].to_dict()))) == results[0]

    def test_the_report_and_folds_csv_show_the_cost_per_fold_and_in_total(self, tmp_path):
        results = [_result(0, 0.0222), _result(1, 0.0222)]
        summary = summarize(results)

        paths = write_outputs(summary, results, tmp_path)

        html = Path(paths["report_html"]).read_text()
        assert "Estimated cost: about $0.04 for 2 of 2 folds (L4 at the prices of 2026-05-07" in html
        assert "NVIDIA L4 x 1" in html and "$0.0222" in html
        table = Path(paths["folds_csv"]).read_text().splitlines()
        assert "cost_usd" in table[0].split(",") and "0.0222" in table[1]

    def test_a_local_run_reports_cpu_seconds_and_no_dollars(self):
        summary = summarize([_result(0, None), _result(1, None)])

        assert summary.cost.total_usd is None and summary.cost.total_cpu_s == 160.0
        assert summary.cost.describe() == (
            "2 folds: 200 s wall, 160 CPU-seconds; no GPU price applies (not run on Modal)"
        )
        assert "cost: 2 folds: 200 s wall" in format_summary(summary)

    def test_a_failed_folds_last_progress_line_is_in_the_report(self):
        results = [_result(0, None), FoldResult.failed(1, 0, 1, "RuntimeError: GPU lost")]
        summary = summarize(results, AggregateConfig(min_successful_folds=1))
        failed = FailedFold(fold_id=1, repeat=0, index=1, error="RuntimeError: GPU lost", last_progress="x")
        html = render_html(dataclasses.replace(summary, failed_folds=[failed]))

        assert "last progress</th>" in html and ">x</td>" in html
