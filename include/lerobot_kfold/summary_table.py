"""Plain-text rendering of a k-fold summary for a terminal: the per-fold table and mean ± interval."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def format_summary(summary: Mapping[str, Any]) -> str:
    """The per-fold table, each metric's mean ± half-width [interval], failures and output paths."""
    folds = summary.get("folds", [])
    present = [c for c in FOLD_COLUMNS if any(c[0] in (f.get("metrics") or {}) for f in folds)]
    header = ["fold", "status", *[c[1] for c in present], "steps", "wall s"]
    rows = []
    for fold in folds:
        metrics = fold.get("metrics") or {}
        rows.append(
            [
                str(fold.get("fold_id")),
                str(fold.get("status")),
                *[_fmt(metrics.get(key), pattern) for key, _, pattern in present],
                _fmt(fold.get("steps"), "{}"),
                _fmt(fold.get("wall_s"), "{:.0f}"),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]

    confidence = (summary.get("config") or {}).get("confidence", 0.95)
    lines.append("")
    lines.append(f"mean ± {confidence:.0%} t-interval half-width over successful folds:")
    for name, stats in (summary.get("metrics") or {}).items():
        pattern = "{:.1%}" if name in PERCENT_METRICS else "{:.5g}"
        mean = _fmt(stats.get("mean"), pattern)
        if stats.get("ci_half_width") is None:
            lines.append(f"  {name}: {mean} (n={stats.get('n')}, no interval with one fold)")
            continue
        half = _fmt(stats["ci_half_width"], pattern)
        low, high = _fmt(stats["ci_low"], pattern), _fmt(stats["ci_high"], pattern)
        lines.append(
            f"  {name}: {mean} ± {half}  [{low}, {high}]  std {_fmt(stats['std'], pattern)}, n={stats['n']}"
        )
    best = summary.get("best_fold") or {}
    if best:
        lines.append(
            f"best fold: {best.get('fold_id')} ({best.get('metric')} = {_fmt(best.get('value'), '{:.5g}')})"
        )
    for failed in summary.get("failed_folds") or []:
        lines.append(f"FAILED fold {failed.get('fold_id')}: {failed.get('error')}")
    for warning in summary.get("warnings") or []:
        lines.append(f"warning: {warning}")
    outputs = summary.get("outputs") or {}
    if outputs:
        lines.append("")
        report = outputs.get("report_html")
        if report:
            lines.append(f"report: {report}")
        lines.append("files: " + ", ".join(str(v) for k, v in outputs.items() if k != "report_html"))
    if summary.get("wall_s") is not None:
        lines.append(f"wall time: {summary['wall_s']:.0f}s")
    return "\n".join(lines)
