"""Plain-text rendering of a k-fold summary for a terminal: the per-fold table and mean ± interval."""

from __future__ import annotations

from typing import Any

from lerobot_kfold.results import Comparison, CVSummary, FinalTest, FoldRow, MetricStats, RateInterval

# Columns of the per-fold table, in order, when the folds report them.
FOLD_COLUMNS = (
    ("val_l1", "val L1", "{:.5f}"),
    ("best_val_l1", "best val L1", "{:.5f}"),
    ("val_l1_normalized", "val L1 (norm.)", "{:.4f}"),
    ("sim_success_rate", "success", "{:.0%}"),
    ("sim_mean_episode_length", "ep. length", "{:.0f}"),
)
PERCENT_METRICS = {"sim_success_rate"}


def _fmt(value: Any, pattern: str) -> str:
    if value is None:
        return "-"
    try:
        return pattern.format(value)
    except (TypeError, ValueError):
        return str(value)


def format_summary(summary: CVSummary) -> str:
    """The per-fold table, each metric's mean ± half-width [interval], failures and output paths."""
    lines = [] if summary.comparison is None else [f"folds of {summary.candidate} (chosen):"]
    lines += _fold_table(summary.folds)
    lines.append("")
    lines.append(
        f"mean ± {summary.config.confidence:.0%} t-interval half-width over successful folds "
        "[t-interval]; corrected: the Nadeau-Bengio interval (folds share episodes; used for comparisons):"
    )
    lines += [_metric_line(name, stats) for name, stats in summary.metrics.items()]
    for name, rates in summary.success_rates.items():
        folds = ", ".join(_rate(f, short=True) for f in rates.per_fold)
        lines.append(f"  {name} over rollouts ({rates.confidence:.0%} Wilson): pooled {_rate(rates.pooled)}")
        lines.append(f"    per fold: {folds}")
    best = summary.best_fold
    lines.append(f"best fold: {best.fold_id} ({best.metric} = {_fmt(best.value, '{:.5g}')})")
    lines += [f"FAILED fold {failed.fold_id}: {failed.error}" for failed in summary.failed_folds]
    if summary.comparison is not None:
        lines += _comparison_lines(summary.comparison)
    if summary.correlation is not None and summary.correlation.rho is not None:
        c = summary.correlation
        lines.append(f"{c.x} against {c.y}: Spearman rho {c.rho:.2f} over {c.n} (candidate, fold) points")
    if summary.final_test is not None:
        lines += _final_test_lines(summary.final_test)
    lines += [f"warning: {warning}" for warning in summary.warnings]
    if summary.cost is not None:
        lines.append(f"cost: {summary.cost.describe()}")
    if summary.outputs:
        lines.append("")
        report = summary.outputs.get("report_html")
        if report:
            lines.append(f"report: {report}")
        lines.append("files: " + ", ".join(v for k, v in summary.outputs.items() if k != "report_html"))
    if summary.wall_s is not None:
        lines.append(f"wall time: {summary.wall_s:.0f}s")
    return "\n".join(lines)


def _fold_table(folds: list[FoldRow]) -> list[str]:
    """One line per fold with the metric columns some fold reports, right-aligned under a header."""
    present = [c for c in FOLD_COLUMNS if any(c[0] in f.metrics for f in folds)]
    header = ["fold", "status", *[c[1] for c in present], "steps", "wall s"]
    rows = [
        [
            str(fold.fold_id),
            fold.status,
            *[_fmt(fold.metrics.get(key), pattern) for key, _, pattern in present],
            _fmt(fold.steps, "{}"),
            _fmt(fold.wall_s, "{:.0f}"),
        ]
        for fold in folds
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return lines


def _metric_line(name: str, stats: MetricStats) -> str:
    pattern = "{:.1%}" if name in PERCENT_METRICS else "{:.5g}"
    mean = _fmt(stats.mean, pattern)
    if stats.ci_half_width is None:
        return f"  {name}: {mean} (n={stats.n}, no interval with one fold)"
    half = _fmt(stats.ci_half_width, pattern)
    low, high = _fmt(stats.ci_low, pattern), _fmt(stats.ci_high, pattern)
    line = f"  {name}: {mean} ± {half}  [{low}, {high}]"
    if stats.corrected_ci_low is not None:
        line += (
            f"  corrected [{_fmt(stats.corrected_ci_low, pattern)}, {_fmt(stats.corrected_ci_high, pattern)}]"
        )
    return f"{line}  std {_fmt(stats.std, pattern)}, n={stats.n}"


def _rate(rate: RateInterval, short: bool = False) -> str:
    interval = f"[{rate.ci_low:.0%}, {rate.ci_high:.0%}]"
    return (
        f"{rate.successes}/{rate.trials} {interval}"
        if short
        else f"{rate.successes}/{rate.trials} = {rate.rate:.0%} {interval}"
    )


def _comparison_lines(comparison: Comparison) -> list[str]:
    """Candidates side by side, each difference against the reference with its verdict, the choice."""
    headline = {comparison.selection.metric, "sim_success_rate"}  # the report has every metric
    lines = ["", "candidates (mean [corrected interval]):"]
    for candidate in comparison.candidates:
        cells = []
        for name, stats in candidate.summary.metrics.items():
            if name not in headline:
                continue
            pattern = "{:.1%}" if name in PERCENT_METRICS else "{:.4g}"
            low, high = _fmt(stats.corrected_ci_low, pattern), _fmt(stats.corrected_ci_high, pattern)
            cells.append(f"{name} {_fmt(stats.mean, pattern)} [{low}, {high}]")
        lines.append(f"  {candidate.name}: {'; '.join(cells)}")
    kind = "baseline" if comparison.reference_is_baseline else "best mean"
    lines.append(f"against {comparison.reference} ({kind}), paired by fold (candidate - reference):")
    for c in (c for c in comparison.comparisons if c.metric in headline):
        pattern = "{:+.1%}" if c.metric in PERCENT_METRICS else "{:+.4g}"
        ci = f"[{_fmt(c.ci_low, pattern)}, {_fmt(c.ci_high, pattern)}]"
        pooled = (
            ""
            if c.pooled_test is None
            else f"; pooled rollouts {c.pooled_test.method} p={c.pooled_test.p_value:.3g}"
        )
        mdd = c.minimum_detectable_difference
        detectable = "no variation between folds" if mdd is None else f"detectable: ±{_fmt(mdd, pattern)[1:]}"
        p = _fmt(c.p_value, "{:.3g}")
        lines.append(
            f"  {c.candidate} {c.metric}: {_fmt(c.mean_difference, pattern)} {ci} p={p} (plain t "
            f"p={_fmt(c.plain_p_value, '{:.3g}')}){pooled}: {c.verdict.upper()} ({detectable})"
        )
    selection = comparison.selection
    lines.append(f"chosen: {selection.chosen} ({selection.reason})")
    lines.append(f"  rule: {selection.rule}")
    lines += [f"warning: {warning}" for warning in comparison.warnings]
    return lines


def _final_test_lines(test: FinalTest) -> list[str]:
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in test.metrics.items()) or "none"
    lines = [
        f"final test of {test.candidate} (refit on {test.n_train_episodes} episodes, tested on "
        f"{test.n_test_episodes}): {metrics}"
    ]
    if test.success is not None:
        lines.append(f"  closed loop (Wilson): {_rate(test.success)}")
    lines.append(f"  {test.note}")
    lines.append(f"  model to ship: {test.model_path}")
    return lines
