"""Statistics for choosing between candidates trained on the same folds, and the selection rule.

Why these and not a plain t-test. Folds of k-fold share training episodes, so their results are
correlated and the usual t-interval over folds (and the paired t-test) is too narrow: it finds
differences that are not there (Dietterich 1998). Nadeau and Bengio (2003) correct the variance of the
mean over J train/test splits by replacing ``1/J`` with ``1/J + n_test/n_train``; with 5 folds that is
0.2 + 0.25, so the standard error grows by a factor of 1.5. That *corrected resampled t* is used for
every interval and test that decides something here; the plain one is reported beside it, labelled.

- Between-fold intervals of a metric (``corrected_interval``): mean ± t_{J-1} * sqrt((1/J + r) * s²), with
  r the mean held-out/training episode ratio of a fold. It says how much the *recipe* varies with the
  training set.
- Success rates over rollouts (``wilson``): per fold and pooled, the Wilson score interval, which stays in
  [0, 1] (scipy's ``binomtest(...).proportion_ci(method="wilson")``). It says how precisely the rollouts
  measured a rate, not how much training runs vary.
- Comparing candidates (``paired_comparison``): the per-fold differences against the reference (the named
  baseline, else the best candidate), their mean, corrected interval and p-value; for success rates also
  a test on the pooled rollouts (McNemar's exact test when both rolled out from the same seeds, else
  Fisher's exact test). The verdict is *better*, *worse* or *no detectable difference*, from the
  corrected interval alone, with the smallest difference the run could detect at 80% power
  ``(t_{1-a/2} + t_{power}) * SE``, so an underpowered comparison says so instead of looking like a tie.
- Offline against closed loop (``rank_correlation``): Spearman's rho between val L1 and success rate over
  every (candidate, fold) point.
- Selection (``select``): the candidate with the best mean of ``selection_metric`` leads; among the
  candidates it is not detectably better than, ``tie_break`` chooses: the first listed (list the simplest
  first) or the best mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lerobot_kfold.results import (
    CandidateSummary,
    Comparison,
    CorrelationPoint,
    CVSummary,
    FoldRate,
    FoldResult,
    IntervalMethods,
    PairedComparison,
    PooledRolloutTest,
    RankCorrelation,
    RateInterval,
    Selection,
    SuccessRates,
)

SUCCESS_METRIC = "sim_success_rate"
OFFLINE_METRIC = "val_l1"
# Power at which the minimum detectable difference is stated.
POWER = 0.8
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"

INTERVAL_TEXT = {
    "ci": "Student t over folds (assumes independent folds; folds share training episodes, so too narrow)",
    "corrected_ci": "Nadeau-Bengio corrected resampled t over folds: variance x (1/J + n_val/n_train)",
    "rate_ci": "Wilson score interval over rollouts (binomial; stays in [0, 1])",
}


# ------------------------------------------------------------------------------------- rates


def wilson(successes: int, trials: int, confidence: float) -> RateInterval:
    """``successes`` of ``trials`` with its Wilson score interval (scipy)."""
    from scipy import stats  # lazily: every fold process imports this module

    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"a rate needs 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return RateInterval(
        successes=successes, trials=trials, rate=successes / trials, ci_low=ci.low, ci_high=ci.high
    )


def rollout_counts(result: FoldResult) -> tuple[int, int] | None:
    """(successes, trials) of a fold's closed-loop rollouts; None when it had none."""
    sim = result.sim or {}
    outcomes = sim.get("sim_successes")
    if isinstance(outcomes, list) and outcomes:
        return sum(bool(o) for o in outcomes), len(outcomes)
    rate, trials = result.metrics.get(SUCCESS_METRIC), sim.get("sim_episodes")
    if rate is None or not isinstance(trials, int) or trials < 1:
        return None
    return round(rate * trials), trials


def success_rates(results: Sequence[FoldResult], confidence: float) -> SuccessRates | None:
    """Per-fold and pooled Wilson intervals of the successful folds' rollouts; None without rollouts."""
    per_fold = []
    for result in sorted(results, key=lambda r: r.fold_id):
        counts = rollout_counts(result) if result.ok else None
        if counts is not None:
            rate = wilson(*counts, confidence)
            per_fold.append(FoldRate(fold_id=result.fold_id, **vars(rate)))
    if not per_fold:
        return None
    pooled = wilson(sum(f.successes for f in per_fold), sum(f.trials for f in per_fold), confidence)
    return SuccessRates(method="wilson", confidence=confidence, pooled=pooled, per_fold=per_fold)


# --------------------------------------------------------------------------- between-fold intervals


def test_train_ratio(results: Sequence[FoldResult]) -> float | None:
    """Mean held-out/training episode ratio of the successful folds (n_val/n_train of Nadeau-Bengio)."""
    ratios = [
        len(r.val_episodes) / len(r.train_episodes)
        for r in results
        if r.ok and r.val_episodes and r.train_episodes
    ]
    return float(np.mean(ratios)) if ratios else None


@dataclass(frozen=True)
class TTest:
    """A one-sample t on ``values`` (fold values, or per-fold differences) with a variance factor."""

    n: int
    mean: float
    se: float
    df: int
    ci_low: float
    ci_high: float
    p_value: float


def t_test(values: Sequence[float], variance_factor: float, confidence: float) -> TTest | None:
    """mean ± t_{(1+c)/2, n-1} * sqrt(variance_factor * s²), and the two-sided p-value of mean = 0.

    ``variance_factor`` 1/n is the plain t (scipy's ``ttest_1samp``); 1/n + n_val/n_train is
    Nadeau-Bengio's corrected resampled t. None with fewer than two values.
    """
    from scipy import stats  # lazily: every fold process imports this module

    arr = np.asarray(values, dtype=float)
    n = len(arr)
    if n < 2:
        return None
    mean = float(arr[0]) if (arr == arr[0]).all() else float(arr.mean())
    variance = 0.0 if (arr == arr[0]).all() else float(arr.var(ddof=1))
    se = math.sqrt(variance_factor * variance)
    df = n - 1
    half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    # Every value identical: nothing varies, so a non-zero mean is certain and a zero one is no evidence.
    p_value = float(2 * stats.t.sf(abs(mean) / se, df)) if se > 0 else float(mean == 0)
    return TTest(n=n, mean=mean, se=se, df=df, ci_low=mean - half, ci_high=mean + half, p_value=p_value)


def corrected_t(values: Sequence[float], ratio: float, confidence: float) -> TTest | None:
    """The Nadeau-Bengio corrected resampled t: variance x (1/J + n_val/n_train), J = len(values)."""
    return t_test(values, 1 / len(values) + ratio, confidence) if len(values) >= 2 else None


def plain_t(values: Sequence[float], confidence: float) -> TTest | None:
    return t_test(values, 1 / len(values), confidence) if len(values) >= 2 else None


def minimum_detectable_difference(
    test: TTest | None, confidence: float, power: float = POWER
) -> float | None:
    """The smallest true difference the two-sided test finds with probability ``power``."""
    from scipy import stats  # lazily: every fold process imports this module

    if test is None or test.se == 0:
        return None
    quantiles = stats.t.ppf((1 + confidence) / 2, test.df) + stats.t.ppf(power, test.df)
    return float(quantiles * test.se)


def verdict(test: TTest | None, mode: str | None) -> str:
    """better / worse (lower / higher for metrics without a direction) / no detectable difference."""
    if test is None or test.ci_low <= 0 <= test.ci_high:
        return NO_DIFFERENCE
    higher = test.mean > 0
    if mode is None:
        return "higher" if higher else "lower"
    return BETTER if higher == (mode == "max") else WORSE


# ------------------------------------------------------------------------------------ comparisons


@dataclass(frozen=True)
class CandidateFolds:
    """One candidate as the comparison sees it: its summary and its full fold results."""

    name: str
    overrides: dict[str, Any]
    summary: CVSummary
    results: list[FoldResult]

    def values(self, metric: str) -> dict[int, float]:
        """Finite values of ``metric`` by fold id, successful folds only."""
        return {
            row.fold_id: row.metrics[metric]
            for row in self.summary.folds
            if row.ok and row.metrics.get(metric) is not None
        }


def paired_comparison(
    candidate: CandidateFolds,
    reference: CandidateFolds,
    metric: str,
    mode: str | None,
    ratio: float,
    confidence: float,
) -> PairedComparison:
    """``metric`` of ``candidate`` minus ``reference``, fold by fold, with both t-tests and a verdict."""
    ours, theirs = candidate.values(metric), reference.values(metric)
    fold_ids = sorted(set(ours) & set(theirs))
    differences = [ours[f] - theirs[f] for f in fold_ids]
    corrected, plain = corrected_t(differences, ratio, confidence), plain_t(differences, confidence)
    return PairedComparison(
        metric=metric,
        candidate=candidate.name,
        reference=reference.name,
        mode=mode or "",
        fold_ids=fold_ids,
        differences=differences,
        mean_difference=float(np.mean(differences)) if differences else math.nan,
        ci_low=None if corrected is None else corrected.ci_low,
        ci_high=None if corrected is None else corrected.ci_high,
        p_value=None if corrected is None else corrected.p_value,
        plain_ci_low=None if plain is None else plain.ci_low,
        plain_ci_high=None if plain is None else plain.ci_high,
        plain_p_value=None if plain is None else plain.p_value,
        minimum_detectable_difference=minimum_detectable_difference(corrected, confidence),
        verdict=verdict(corrected, mode),
        pooled_test=pooled_rollout_test(candidate, reference, fold_ids) if metric == SUCCESS_METRIC else None,
    )


def pooled_rollout_test(
    candidate: CandidateFolds, reference: CandidateFolds, fold_ids: Sequence[int]
) -> PooledRolloutTest | None:
    """McNemar's exact test on paired rollouts (same seeds in every fold), else Fisher's exact test."""
    from scipy import stats  # lazily: every fold process imports this module

    ours = {r.fold_id: r for r in candidate.results}
    theirs = {r.fold_id: r for r in reference.results}
    counts = [
        (rollout_counts(ours[f]), rollout_counts(theirs[f])) for f in fold_ids if f in ours and f in theirs
    ]
    if not counts or any(a is None or b is None for a, b in counts):
        return None
    sa, na = sum(a[0] for a, _ in counts), sum(a[1] for a, _ in counts)
    sb, nb = sum(b[0] for _, b in counts), sum(b[1] for _, b in counts)
    pairs = [_paired_outcomes(ours[f], theirs[f]) for f in fold_ids]
    if all(p is not None for p in pairs):
        only_ours = sum(a and not b for p in pairs for a, b in p)  # type: ignore[union-attr]
        only_theirs = sum(b and not a for p in pairs for a, b in p)  # type: ignore[union-attr]
        discordant = only_ours + only_theirs
        p_value = 1.0 if discordant == 0 else float(stats.binomtest(only_ours, discordant, 0.5).pvalue)
        method, split = "mcnemar_exact", [only_ours, only_theirs]
    else:
        p_value = float(stats.fisher_exact([[sa, na - sa], [sb, nb - sb]]).pvalue)
        method, split = "fisher_exact", None
    return PooledRolloutTest(
        method=method,
        candidate_successes=sa,
        candidate_trials=na,
        reference_successes=sb,
        reference_trials=nb,
        discordant=split,
        p_value=p_value,
    )


def _paired_outcomes(ours: FoldResult, theirs: FoldResult) -> list[tuple[bool, bool]] | None:
    """Rollout outcomes of two candidates' fold side by side, when they rolled out from the same seeds."""
    a, b = ours.sim or {}, theirs.sim or {}
    seeds, outcomes = (
        (a.get("sim_seeds"), b.get("sim_seeds")),
        (a.get("sim_successes"), b.get("sim_successes")),
    )
    if not all(isinstance(x, list) for x in (*seeds, *outcomes)) or seeds[0] != seeds[1]:
        return None
    if not len(outcomes[0]) == len(outcomes[1]) == len(seeds[0]):
        return None
    return [(bool(x), bool(y)) for x, y in zip(outcomes[0], outcomes[1], strict=True)]


def rank_correlation(candidates: Sequence[CandidateFolds]) -> RankCorrelation | None:
    """Spearman's rho of val L1 and success rate over every (candidate, fold) with both; None if none."""
    from scipy import stats  # lazily: every fold process imports this module

    points = []
    for candidate in candidates:
        xs, ys = candidate.values(OFFLINE_METRIC), candidate.values(SUCCESS_METRIC)
        points += [
            CorrelationPoint(candidate=candidate.name, fold_id=f, x=xs[f], y=ys[f]) for f in xs if f in ys
        ]
    if not points:
        return None
    rho = p_value = None
    if len(points) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input: rho is undefined (NaN), reported as None
            result = stats.spearmanr([p.x for p in points], [p.y for p in points])
        if math.isfinite(result.statistic):
            rho, p_value = float(result.statistic), float(result.pvalue)
    return RankCorrelation(
        x=OFFLINE_METRIC, y=SUCCESS_METRIC, n=len(points), rho=rho, p_value=p_value, points=points
    )


def interval_methods(results: Sequence[FoldResult], n_splits: int) -> IntervalMethods:
    return IntervalMethods(**INTERVAL_TEXT, n_splits=n_splits, test_train_ratio=test_train_ratio(results))


# -------------------------------------------------------------------------------------- selection


def leader_of(candidates: Sequence[CandidateFolds], metric: str, mode: str) -> CandidateFolds:
    """The candidate with the best mean of ``metric`` (ties: the first listed)."""
    scored = [
        (c.summary.metrics[metric].mean, i, c)
        for i, c in enumerate(candidates)
        if metric in c.summary.metrics
    ]
    if not scored:
        raise ValueError(f"no candidate reports the selection metric {metric!r}")
    sign = -1.0 if mode == "max" else 1.0
    return min(scored, key=lambda item: (sign * item[0], item[1]))[2]


def select(
    candidates: Sequence[CandidateFolds],
    metric: str,
    mode: str,
    tie_break: str,
    ratio: float,
    confidence: float,
) -> Selection:
    """The stated rule: the best mean leads; ``tie_break`` picks among those it is not detectably ahead of."""
    leader = leader_of(candidates, metric, mode)
    close = [
        c.name
        for c in candidates
        if c is leader
        or paired_comparison(c, leader, metric, mode, ratio, confidence).verdict == NO_DIFFERENCE
    ]
    best = "highest" if mode == "max" else "lowest"
    if tie_break == "first_listed":
        chosen = close[0]
        rule = (
            f"the {best} mean {metric} leads; of the candidates it is not detectably better than (corrected "
            f"resampled t at {confidence:.0%}), the first listed is chosen"
        )
    else:
        chosen = leader.name
        rule = f"the {best} mean {metric} is chosen, whether or not the difference is detectable"
    if chosen == leader.name:
        reason = f"{chosen} has the {best} mean {metric}"
        if len(close) > 1:
            reason += f"; not detectably better than {', '.join(n for n in close if n != chosen)}"
    else:
        reason = (
            f"{leader.name} has the {best} mean {metric} but is not detectably better than {chosen}, "
            f"listed first"
        )
    return Selection(
        metric=metric,
        mode=mode,
        tie_break=tie_break,
        rule=rule,
        leader=leader.name,
        not_detectably_worse=close,
        chosen=chosen,
        reason=reason,
    )


def compare(
    candidates: Sequence[CandidateFolds],
    *,
    metric: str,
    directions: Mapping[str, str],
    confidence: float,
    baseline: str = "",
    tie_break: str = "first_listed",
) -> Comparison:
    """Every candidate against the reference on every metric they share, and the selection."""
    results = [r for c in candidates for r in c.results]
    ratio = test_train_ratio(results) or 0.0
    mode = directions[metric]
    selection = select(candidates, metric, mode, tie_break, ratio, confidence)
    reference_name = baseline or selection.leader
    reference = next(c for c in candidates if c.name == reference_name)
    shared = [m for m in reference.summary.metrics if all(m in c.summary.metrics for c in candidates)]
    comparisons = [
        paired_comparison(c, reference, m, directions.get(m), ratio, confidence)
        for c in candidates
        if c is not reference
        for m in shared
    ]
    return Comparison(
        reference=reference_name,
        reference_is_baseline=bool(baseline),
        confidence=confidence,
        power=POWER,
        candidates=[
            CandidateSummary(name=c.name, overrides=c.overrides, summary=c.summary) for c in candidates
        ],
        comparisons=comparisons,
        selection=selection,
        warnings=comparison_warnings(candidates, ratio),
    )


def comparison_warnings(candidates: Sequence[CandidateFolds], ratio: float) -> list[str]:
    notes = []
    keys = [r.resume_key for c in candidates for r in c.results[:1] if isinstance(r.resume_key, dict)]
    chunks = {key.get("chunk_size") for key in keys}
    if len(chunks) > 1:
        notes.append(
            "candidates predict action chunks of different lengths: val_l1 averages the error over each "
            "candidate's own chunk, so it compares different horizons; compare them by closed-loop success"
        )
    if not ratio:
        notes.append("fold sizes unknown: the corrected intervals fall back to the plain t")
    n_folds = {len(c.summary.folds) for c in candidates}
    pairs = {len(c.values(c.summary.config.selection_metric)) for c in candidates}
    if len(n_folds) == 1 and pairs != n_folds:
        notes.append(
            "some folds failed or lack the metric in some candidate: comparisons use the folds all have"
        )
    return notes
