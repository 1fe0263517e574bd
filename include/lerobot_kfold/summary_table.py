"""Plain-text rendering of a k-fold summary for a terminal: the per-fold table and mean ± interval."""

from __future__ import annotations

from typing import Any

from lerobot_kfold.results import CVSummary, FoldRow, MetricStats

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
    lines = _fold_table(summary.folds)
    lines.append("")
    lines.append(f"mean ± {summary.config.confidence:.0%} t-interval half-width over successful folds:")
    lines += [_metric_line(name, stats) for name, stats in summary.metrics.items()]
    best = summary.best_fold
    lines.append(f"best fold: {best.fold_id} ({best.metric} = {_fmt(best.value, '{:.5g}')})")
    lines += [f"FAILED fold {failed.fold_id}: {failed.error}" for failed in summary.failed_folds]
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
    return f"  {name}: {mean} ± {half}  [{low}, {high}]  std {_fmt(stats.std, pattern)}, n={stats.n}"
