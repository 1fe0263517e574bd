"""The statistics of comparing candidates, each against a value computed by hand (and scipy where it has it).

Hand computations use closed forms: the Wilson score interval, Student's t with 4 degrees of freedom
(F(t) = 1/2 + (3/4)(x - x^3/3), x = t / sqrt(t^2 + 4)), exact binomial and hypergeometric sums, and
Spearman's 1 - 6 sum(d^2) / (n (n^2 - 1)) without ties.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import pytest
from scipy import stats

from lerobot_kfold import comparison
from lerobot_kfold.aggregate import METRIC_DIRECTIONS, AggregateConfig, summarize
from lerobot_kfold.comparison import CandidateFolds
from lerobot_kfold.results import CVSummary, FoldResult

Z95 = 1.959963984540054  # the 97.5% normal quantile
T975_DF4 = 2.7764451051977987  # Student t, 4 degrees of freedom: 97.5% and 80% quantiles
T80_DF4 = 0.9409645158146153


def t4_two_sided_p(t: float) -> float:
    """Two-sided p-value of Student's t with 4 degrees of freedom, from its closed-form CDF."""
    x = abs(t) / math.sqrt(t * t + 4)
    cdf = 0.5 + 0.75 * (x - x**3 / 3)
    return 2 * (1 - cdf)


def wilson_by_hand(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return center - half, center + half


def fold(
    fold_id: int,
    metrics: dict[str, float],
    *,
    seeds: list[int] | None = None,
    successes: list[bool] | None = None,
    train: int = 8,
    val: int = 2,
) -> FoldResult:
    sim = None
    if successes is not None:
        sim = {"sim_seeds": seeds or list(range(len(successes))), "sim_successes": successes}
        sim["sim_episodes"] = len(successes)
        metrics = {**metrics, "sim_success_rate": sum(successes) / len(successes)}
    return FoldResult(
        fold_id=fold_id,
        repeat=0,
        index=fold_id,
        status="ok",
        train_episodes=list(range(train)),
        val_episodes=list(range(100, 100 + val)),
        metrics=metrics,
        sim=sim,
        resume_key={"chunk_size": 10},
    )


def candidate(name: str, results: list[FoldResult], metric: str = "val_l1") -> CandidateFolds:
    config = AggregateConfig(selection_metric=metric)
    return CandidateFolds(name=name, overrides={}, summary=summarize(results, config), results=results)


def l1_candidate(name: str, values: Sequence[float]) -> CandidateFolds:
    return candidate(name, [fold(i, {"val_l1": v}) for i, v in enumerate(values)])


class TestWilson:
    @pytest.mark.parametrize(("k", "n"), [(3, 10), (0, 10), (10, 10), (1, 2), (17, 50)])
    def test_matches_the_score_interval_by_hand_and_stays_in_the_unit_interval(self, k: int, n: int) -> None:
        rate = comparison.wilson(k, n, 0.95)
        low, high = wilson_by_hand(k, n)
        assert (rate.ci_low, rate.ci_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
        assert 0.0 <= rate.ci_low <= rate.rate <= rate.ci_high <= 1.0
        assert (rate.successes, rate.trials, rate.rate) == (k, n, k / n)

    def test_the_textbook_value(self) -> None:
        rate = comparison.wilson(3, 10, 0.95)
        assert (round(rate.ci_low, 4), round(rate.ci_high, 4)) == (0.1078, 0.6032)

    def test_success_rates_of_a_summary_are_per_fold_and_pooled(self) -> None:
        results = [
            fold(0, {"val_l1": 0.1}, successes=[True, False, False]),
            fold(1, {"val_l1": 0.2}, successes=[False] * 3),
        ]
        summary = summarize(results, AggregateConfig())
        rates = summary.success_rates["sim_success_rate"]
        assert [(f.fold_id, f.successes, f.trials) for f in rates.per_fold] == [(0, 1, 3), (1, 0, 3)]
        assert (rates.pooled.successes, rates.pooled.trials) == (1, 6)
        assert (rates.pooled.ci_low, rates.pooled.ci_high) == pytest.approx(wilson_by_hand(1, 6))
        # The between-fold t-interval of the same rate goes below 0; the Wilson interval cannot.
        assert summary.metrics["sim_success_rate"].ci_low < 0 <= rates.pooled.ci_low


class TestCorrectedResampledT:
    DIFFERENCES = (0.1, 0.3, 0.2, 0.0, 0.4)  # mean 0.2, sample variance 0.025, J = 5
    RATIO = 0.25  # 2 held-out episodes per 8 training ones

    def test_interval_and_p_value_by_hand(self) -> None:
        test = comparison.corrected_t(self.DIFFERENCES, self.RATIO, 0.95)
        se = math.sqrt((1 / 5 + 0.25) * 0.025)  # 0.10607: variance x (1/J + n_val/n_train)
        assert test.se == pytest.approx(se)
        assert (test.ci_low, test.ci_high) == pytest.approx((0.2 - T975_DF4 * se, 0.2 + T975_DF4 * se))
        assert test.p_value == pytest.approx(t4_two_sided_p(0.2 / se), abs=1e-12)
        assert test.p_value == pytest.approx(0.1324, abs=1e-4)

    def test_the_plain_t_is_scipys_paired_t_test_and_is_narrower(self) -> None:
        plain = comparison.plain_t(self.DIFFERENCES, 0.95)
        corrected = comparison.corrected_t(self.DIFFERENCES, self.RATIO, 0.95)
        assert plain.p_value == pytest.approx(stats.ttest_1samp(self.DIFFERENCES, 0.0).pvalue)
        ours, theirs = [1.0 + d for d in self.DIFFERENCES], [1.0] * 5
        assert plain.p_value == pytest.approx(stats.ttest_rel(ours, theirs).pvalue)
        assert plain.p_value == pytest.approx(t4_two_sided_p(0.2 / math.sqrt(0.025 / 5)), abs=1e-12)
        assert corrected.ci_high - corrected.ci_low == pytest.approx(1.5 * (plain.ci_high - plain.ci_low))

    def test_minimum_detectable_difference_by_hand(self) -> None:
        test = comparison.corrected_t(self.DIFFERENCES, self.RATIO, 0.95)
        mdd = comparison.minimum_detectable_difference(test, 0.95, power=0.8)
        assert mdd == pytest.approx((T975_DF4 + T80_DF4) * test.se)
        assert mdd == pytest.approx(0.3943, abs=1e-4)

    def test_the_summary_carries_the_corrected_interval_of_every_metric(self) -> None:
        values = [0.1, 0.3, 0.2, 0.0, 0.4]
        summary = summarize([fold(i, {"val_l1": v}) for i, v in enumerate(values)], AggregateConfig())
        stats_ = summary.metrics["val_l1"]
        half = T975_DF4 * math.sqrt(0.45 * 0.025)
        assert (stats_.corrected_ci_low, stats_.corrected_ci_high) == pytest.approx((0.2 - half, 0.2 + half))
        assert stats_.ci_half_width == pytest.approx(T975_DF4 * math.sqrt(0.025 / 5))
        assert summary.intervals.test_train_ratio == 0.25 and summary.intervals.n_splits == 5

    def test_no_test_with_one_fold_and_no_doubt_without_variation(self) -> None:
        assert comparison.corrected_t([0.3], 0.25, 0.95) is None
        flat = comparison.corrected_t([0.0, 0.0, 0.0], 0.25, 0.95)
        assert (flat.p_value, flat.ci_low, flat.ci_high) == (1.0, 0.0, 0.0)
        assert comparison.minimum_detectable_difference(flat, 0.95) is None


class TestPooledRolloutTest:
    def _pair(self, same_seeds: bool) -> tuple[CandidateFolds, CandidateFolds]:
        # Fold 0: ours wins seed 0, theirs wins seeds 1-3; fold 1: theirs wins seeds 0-2. Discordant 1 vs 6.
        theirs_seeds = [0, 1, 2, 3, 4] if same_seeds else [5, 6, 7, 8, 9]
        ours = [
            fold(0, {"val_l1": 0.1}, seeds=[0, 1, 2, 3, 4], successes=[True, False, False, False, False]),
            fold(1, {"val_l1": 0.1}, seeds=[0, 1, 2, 3, 4], successes=[False] * 5),
        ]
        theirs = [
            fold(0, {"val_l1": 0.2}, seeds=theirs_seeds, successes=[False, True, True, True, False]),
            fold(1, {"val_l1": 0.2}, seeds=theirs_seeds, successes=[True, True, True, False, False]),
        ]
        return candidate("ours", ours), candidate("theirs", theirs)

    def test_mcnemar_exact_on_paired_rollouts(self) -> None:
        ours, theirs = self._pair(same_seeds=True)
        test = comparison.pooled_rollout_test(ours, theirs, [0, 1])
        assert (test.method, test.discordant) == ("mcnemar_exact", [1, 6])
        assert test.p_value == pytest.approx(2 * (1 + 7) / 2**7)  # 0.125
        assert (test.candidate_successes, test.candidate_trials) == (1, 10)
        assert (test.reference_successes, test.reference_trials) == (6, 10)

    def test_fisher_exact_when_the_rollouts_are_not_paired(self) -> None:
        ours, theirs = self._pair(same_seeds=False)
        test = comparison.pooled_rollout_test(ours, theirs, [0, 1])
        assert test.method == "fisher_exact" and test.discordant is None
        # Table [[1, 9], [6, 4]]: hypergeometric with 10 per row and 7 successes in 20; the tables as or
        # less likely than the observed one are k = 0, 1, 6, 7 of C(10,k) C(10,7-k) / C(20,7).
        by_hand = (1 * 120 + 10 * 210 + 210 * 10 + 120 * 1) / math.comb(20, 7)
        assert test.p_value == pytest.approx(by_hand)


class TestRankCorrelation:
    def test_spearman_over_every_candidate_and_fold(self) -> None:
        a = candidate(
            "a",
            [
                fold(0, {"val_l1": 1.0}, successes=[True, False]),
                fold(1, {"val_l1": 2.0}, successes=[False, False]),
            ],
        )
        b = candidate(
            "b",
            [
                fold(0, {"val_l1": 3.0}, successes=[True, True]),
                fold(1, {"val_l1": 4.0}, successes=[True, True, True, False]),
                fold(2, {"val_l1": 5.0}, successes=[True] * 4),
            ],
        )
        # val L1 1..5 against success 0.5, 0, 1, 0.75, 1 (a tie: scipy's ranks; by hand below, without ties).
        correlation = comparison.rank_correlation([a, b])
        xs, ys = [1, 2, 3, 4, 5], [0.5, 0.0, 1.0, 0.75, 1.0]
        assert correlation.n == 5
        assert correlation.rho == pytest.approx(stats.spearmanr(xs, ys).statistic)
        assert [(p.candidate, p.fold_id) for p in correlation.points] == [
            ("a", 0),
            ("a", 1),
            ("b", 0),
            ("b", 1),
            ("b", 2),
        ]

    def test_by_hand_without_ties(self) -> None:
        xs = [1.0, 2.0, 3.0, 4.0, 5.0]
        # success 0.25, 0, 0.75, 0.5, 1: ranks 2, 1, 4, 3, 5 against 1..5, d = 1, -1, 1, -1, 0, sum d^2 = 4.
        outcomes = [
            [True, False, False, False],
            [False] * 4,
            [True, True, True, False],
            [True, True, False, False],
            [True] * 4,
        ]
        a = candidate(
            "a",
            [fold(i, {"val_l1": x}, successes=o) for i, (x, o) in enumerate(zip(xs, outcomes, strict=True))],
        )
        assert comparison.rank_correlation([a]).rho == pytest.approx(1 - 6 * 4 / (5 * (25 - 1)))  # 0.8

    def test_undefined_without_variation(self) -> None:
        a = candidate("a", [fold(i, {"val_l1": 0.1 * (i + 1)}, successes=[False]) for i in range(3)])
        correlation = comparison.rank_correlation([a])
        assert (correlation.n, correlation.rho, correlation.p_value) == (3, None, None)


def compare(candidates: list[CandidateFolds], **kwargs: Any) -> Any:
    metric = candidates[0].summary.config.selection_metric
    return comparison.compare(
        candidates, metric=metric, directions=METRIC_DIRECTIONS, confidence=0.95, **kwargs
    )


class TestVerdictsAndSelection:
    CLEARLY_LOWER = (0.10, 0.12, 0.11, 0.13, 0.10)
    HIGHER = (0.30, 0.33, 0.29, 0.35, 0.31)
    NOISY = (0.11, 0.30, 0.05, 0.25, 0.12)

    def test_a_clear_difference_is_better_or_worse_with_the_corrected_interval_excluding_zero(self) -> None:
        result = compare([l1_candidate("low", self.CLEARLY_LOWER), l1_candidate("high", self.HIGHER)])
        assert result.reference == "low" and not result.reference_is_baseline  # the best mean
        (pair,) = result.comparisons
        assert (pair.candidate, pair.metric, pair.verdict) == ("high", "val_l1", "worse")
        assert pair.ci_low > 0
        differences = [h - lo for h, lo in zip(self.HIGHER, self.CLEARLY_LOWER, strict=True)]
        assert pair.differences == pytest.approx(differences)
        assert pair.p_value == pytest.approx(comparison.corrected_t(differences, 0.25, 0.95).p_value)
        assert result.selection.chosen == "low"

    def test_against_a_named_baseline_the_better_candidate_is_better(self) -> None:
        result = compare(
            [l1_candidate("low", self.CLEARLY_LOWER), l1_candidate("high", self.HIGHER)], baseline="high"
        )
        (pair,) = result.comparisons
        assert (result.reference, result.reference_is_baseline) == ("high", True)
        assert (pair.candidate, pair.verdict) == ("low", "better")

    def test_an_underpowered_difference_says_what_it_could_have_detected(self) -> None:
        result = compare([l1_candidate("first", self.NOISY), l1_candidate("second", self.CLEARLY_LOWER)])
        (pair,) = result.comparisons
        assert pair.verdict == "no detectable difference"
        assert pair.ci_low < 0 < pair.ci_high
        assert pair.minimum_detectable_difference > abs(pair.mean_difference)
        # The plain t would have called it; the corrected one does not.
        assert pair.plain_p_value < pair.p_value

    def test_first_listed_among_those_not_detectably_worse_is_chosen(self) -> None:
        candidates = [l1_candidate("first", self.NOISY), l1_candidate("second", self.CLEARLY_LOWER)]
        chosen = compare(candidates).selection
        assert (chosen.leader, chosen.chosen, chosen.not_detectably_worse) == (
            "second",
            "first",
            ["first", "second"],
        )
        assert "first listed" in chosen.rule and "not detectably better" in chosen.reason
        best_mean = compare(candidates, tie_break="best_mean").selection
        assert best_mean.chosen == "second"

    def test_success_rate_comparisons_use_the_direction_of_the_metric(self) -> None:
        good = [fold(i, {"val_l1": 0.1}, successes=[True] * 9 + [False] * (i % 2)) for i in range(5)]
        bad = [
            fold(i, {"val_l1": 0.1 + 0.001 * i}, successes=[False] * 9 + [True] * (i % 2)) for i in range(5)
        ]
        a = candidate("good", good, "sim_success_rate")
        b = candidate("bad", bad, "sim_success_rate")
        result = compare([b, a])
        assert result.selection.chosen == "good"
        pair = next(c for c in result.comparisons if c.metric == "sim_success_rate")
        assert (pair.candidate, pair.verdict) == ("bad", "worse")
        assert pair.pooled_test.method == "mcnemar_exact"

    def test_the_comparison_round_trips_through_summary_json(self) -> None:
        result = compare([l1_candidate("low", self.CLEARLY_LOWER), l1_candidate("high", self.HIGHER)])
        summary = dataclasses.replace(result.candidates[0].summary, candidate="low", comparison=result)
        again = CVSummary.from_dict(json.loads(json.dumps(summary.to_dict(), allow_nan=False)))
        assert again == summary
