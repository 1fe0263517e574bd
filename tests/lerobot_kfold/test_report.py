"""Tests for lerobot_kfold.report: a valid PNG, an HTML page with the numbers, the image and escaped data."""

from __future__ import annotations

import base64
import dataclasses
import re
import struct
from pathlib import Path

import pytest

from lerobot_kfold.aggregate import AggregateConfig, summarize
from lerobot_kfold.report import (
    figure_png_bytes,
    headline_metrics,
    render_figure,
    render_html,
    write_html,
    write_png,
)
from lerobot_kfold.results import CVSummary, FoldResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"


def fold(fold_id: int, val_l1: float | None, sim: float | None = None, *, repeat: int = 0) -> FoldResult:
    """A successful fold result with a short learning curve; ``val_l1=None`` makes it a failed fold."""
    if val_l1 is None:
        return FoldResult.failed(fold_id, repeat, fold_id, EVIL)
    metrics = {"val_l1": val_l1} | ({} if sim is None else {"sim_success_rate": sim})
    curve = [
        {"step": s, "train_loss": 1.0 / s, "val_l1": val_l1 * (1 + 1000 / s)} for s in (500, 1000, 1500, 2000)
    ]
    return FoldResult(
        fold_id=fold_id,
        repeat=repeat,
        index=fold_id,
        status="ok",
        steps=2000,
        wall_s=60.0,
        metrics=metrics,
        best_step=2000,
        learning_curve=curve,
    )


@pytest.fixture(scope="module")
def case() -> tuple[CVSummary, list[FoldResult]]:
    # val_l1 over the four successful folds is 1, 2, 3, 4: mean 2.5, 95% half-width 2.054.
    results = [fold(0, 1.0, 0.5), fold(1, 2.0, 0.2), fold(2, None), fold(3, 3.0, 0.1), fold(4, 4.0, 0.0)]
    summary = summarize(results, AggregateConfig(min_successful_folds=4), run_id="demo-run")
    return summary, results


@pytest.fixture(scope="module")
def png(case) -> bytes:
    return figure_png_bytes(*case)


class TestFigure:
    def test_png_is_valid_and_non_trivial(self, png):
        assert png[:8] == PNG_MAGIC
        assert len(png) > 20_000
        width, height = struct.unpack(">II", png[16:24])  # IHDR chunk follows the magic
        assert width > 1000 and height > 300

    def test_panels_for_headline_metrics_and_curves(self, case):
        summary, results = case
        assert headline_metrics(summary) == ["val_l1", "sim_success_rate"]
        fig = render_figure(summary, results)
        titles = [ax.get_title() for ax in fig.axes]
        assert titles == ["val_l1 per fold", "sim_success_rate per fold", "val_l1 vs step"]
        assert len(fig.axes[2].get_lines()) == 4  # one learning curve per successful fold

    @pytest.mark.parametrize(
        "results",
        [
            pytest.param([fold(0, 0.5)], id="single-fold-no-interval"),
            pytest.param(
                [dataclasses.replace(fold(0, 0.5), learning_curve=[]), fold(1, 0.7)], id="missing-curve"
            ),
            pytest.param([fold(i, 0.1 * (i + 1), repeat=i // 5) for i in range(30)], id="thirty-folds"),
        ],
    )
    def test_edge_cases_render(self, results):
        summary = summarize(results, AggregateConfig())
        assert figure_png_bytes(summary, results, dpi=40)[:8] == PNG_MAGIC

    def test_write_png_is_atomic(self, tmp_path, case):
        target = tmp_path / "report.png"
        target.write_bytes(b"old")
        write_png(*case, target)
        assert target.read_bytes()[:8] == PNG_MAGIC
        assert [p.name for p in tmp_path.iterdir()] == ["report.png"]


class TestHtml:
    def test_contains_metric_table_numbers(self, case, png):
        summary, _ = case
        page = render_html(summary, png)
        # mean 2.5, half-width 3.182446 * 0.6454972 = 2.054, interval [0.4457, 4.554], std 1.291, sem 0.6455
        assert "2.5 ± 2.054" in page
        assert "[0.4457, 4.554]" in page
        assert "<td>1.291</td>" in page and "<td>0.6455</td>" in page
        assert "95% t-interval" in page and "95% corrected interval" in page
        assert "demo-run" in page
        assert "<b>fold 0</b>" in page  # best fold by val_l1 (min)

    def test_embeds_the_image(self, case, png):
        page = render_html(case[0], png)
        match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
        assert match and base64.b64decode(match.group(1)) == png
        assert "http://" not in page and "https://" not in page  # self-contained

    def test_escapes_data(self, case):
        summary, _ = case
        evil_summary = dataclasses.replace(summary, run_id=EVIL)
        page = render_html(evil_summary)
        assert "<script" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert page.count("&lt;script&gt;") >= 2  # run id and the failed fold's error

    def test_escapes_metric_names(self):
        results = [
            dataclasses.replace(fold(i, 1.0 + i), metrics={"val_l1": 1.0 + i, "<b>x</b>": 0.5})
            for i in range(2)
        ]
        page = render_html(summarize(results, AggregateConfig()))
        assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page

    def test_single_fold_shows_no_interval(self):
        page = render_html(summarize([fold(0, 0.5)], AggregateConfig()))
        assert "n = 1" in page

    def test_write_html_is_atomic(self, tmp_path, case, png):
        target = tmp_path / "report.html"
        target.write_text("old")
        write_html(case[0], target, png)
        assert target.read_text().startswith("<!DOCTYPE html>")
        assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


class TestComparisonReport:
    """A comparison of two candidates: side by side, paired lines, verdicts, the scatter, the final test."""

    @pytest.fixture(scope="class")
    def compared(self, tmp_path_factory) -> tuple[CVSummary, dict[str, str]]:
        from lerobot_kfold import comparison
        from lerobot_kfold.aggregate import METRIC_DIRECTIONS, write_outputs
        from lerobot_kfold.results import FinalTest
        from tests.lerobot_kfold.test_comparison import candidate
        from tests.lerobot_kfold.test_comparison import fold as rolled_out

        low = [rolled_out(i, {"val_l1": 0.1 + 0.01 * i}, successes=[True, True, False]) for i in range(3)]
        high = [rolled_out(i, {"val_l1": 0.3 + 0.02 * i}, successes=[False, False, i == 0]) for i in range(3)]
        candidates = [candidate("low", low), candidate("high", high)]
        result = comparison.compare(
            candidates, metric="val_l1", directions=METRIC_DIRECTIONS, confidence=0.95
        )
        test = FinalTest(
            candidate="low",
            n_train_episodes=9,
            n_test_episodes=3,
            metrics={"val_l1": 0.12},
            success=comparison.wilson(2, 3, 0.95),
            sim_seed=1,
            model_path="runs/r/refit/checkpoints/000004/pretrained_model",
            result_file="runs/r/refit/result.json",
            note="the estimate to quote",
        )
        summary = dataclasses.replace(
            candidates[0].summary,
            candidate="low",
            comparison=result,
            correlation=comparison.rank_correlation(candidates),
            final_test=test,
        )
        by_name = {c.name: c.results for c in candidates}
        paths = write_outputs(summary, low, tmp_path_factory.mktemp("report"), by_name)
        return summary, paths

    def test_the_page_shows_candidates_verdicts_the_choice_the_correlation_and_the_final_test(self, compared):
        _, paths = compared
        page = Path(paths["report_html"]).read_text()
        for text in (
            "Candidates side by side",
            "Paired differences against low (best mean)",
            "<b>Chosen: low</b>",
            "worse",
            "Success over rollouts",
            "Offline against closed loop",
            "Final test: low refit",
            "runs/r/refit/checkpoints/000004/pretrained_model",
            "corrected resampled t",
            "Wilson",
        ):
            assert text in page, text
        assert page.count("data:image/png;base64,") == 2, "the fold figure and the comparison figure"

    def test_folds_csv_holds_every_candidates_folds_and_the_comparison_figure_is_written(self, compared):
        _, paths = compared
        rows = Path(paths["folds_csv"]).read_text().splitlines()
        assert rows[0].startswith("candidate,fold_id,")
        assert [row.split(",")[0] for row in rows[1:]] == ["low"] * 3 + ["high"] * 3
        assert Path(paths["comparison_png"]).read_bytes().startswith(PNG_MAGIC)
