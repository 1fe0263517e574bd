"""Figure and self-contained HTML report of a k-fold summary.

Why both a PNG and an HTML file: the PNG is what people paste into a chat or a slide; the HTML is what
they open from the run's output folder (or an Airflow link) to see the numbers, the failed folds and the
figure together. The HTML has no external assets (inline CSS, the PNG embedded as a data URI), so it
still works when copied off the volume, and everything taken from the data is HTML-escaped: error texts
are arbitrary strings from remote machines.

The figure uses matplotlib's object API with the Agg canvas and never touches ``pyplot``: no display is
needed, no global backend is switched, and it is safe in a worker thread.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from lerobot_kfold.atomic_io import write_bytes_atomic, write_text_atomic
from lerobot_kfold.results import (
    BestFold,
    Comparison,
    CVSummary,
    FailedFold,
    FinalTest,
    FoldResult,
    RankCorrelation,
    RateInterval,
)

__all__ = [
    "comparison_png_bytes",
    "figure_png_bytes",
    "headline_metrics",
    "render_figure",
    "render_html",
    "write_html",
    "write_png",
]

# Closed-loop success: shown next to the selection metric whenever the simulator evaluation ran,
# because offline validation loss tracks rollout success poorly.
SUCCESS_METRIC = "sim_success_rate"
# Metric drawn against training step from each fold's ``learning_curve``.
CURVE_METRIC = "val_l1"
# Above this many folds, the learning-curve legend would hide the curves.
MAX_LEGEND_FOLDS = 10


def headline_metrics(summary: CVSummary) -> list[str]:
    """The selection metric, plus the simulator success rate when it was aggregated."""
    names = [summary.config.selection_metric]
    if SUCCESS_METRIC in summary.metrics and SUCCESS_METRIC not in names:
        names.append(SUCCESS_METRIC)
    return [n for n in names if n in summary.metrics]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _confidence_label(summary: CVSummary) -> str:
    return f"{float(summary.config.confidence) * 100:g}%"


def _plot_metric(ax: Any, summary: CVSummary, name: str) -> None:
    """Per-fold values of one metric with the mean line and its confidence band."""
    stats = summary.metrics[name]
    rows = summary.folds
    best = summary.best_fold
    xs = [row.fold_id for row in rows]
    ok = [(row.fold_id, _finite(row.metrics.get(name))) for row in rows if row.ok]
    ok = [(x, y) for x, y in ok if y is not None]
    if stats.ci_low is not None:
        ax.axhspan(
            stats.ci_low,
            stats.ci_high,
            color="tab:blue",
            alpha=0.15,
            label=f"{_confidence_label(summary)} t-interval",
        )
    ax.axhline(stats.mean, color="tab:blue", lw=1.5, label=f"mean {stats.mean:.4g} (n={stats.n})")
    if ok:
        ax.plot([x for x, _ in ok], [y for _, y in ok], "o", color="black", ms=6, label="fold")
    if name == best.metric:
        ax.plot([best.fold_id], [best.value], "*", color="tab:orange", ms=15, label="best fold")
    failed = [row.fold_id for row in rows if not row.ok]
    if failed:
        # Failed folds have no value: mark them on the x axis so the gap is visible.
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(
            failed, [0.03] * len(failed), "x", color="tab:red", ms=9, mew=2, transform=trans, label="failed"
        )
    ax.set_xticks(xs if len(xs) <= 20 else xs[:: math.ceil(len(xs) / 20)])
    if xs:
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_xlabel("fold")
    ax.set_ylabel(name)
    ax.set_title(f"{name} per fold")
    ax.grid(True, axis="y", alpha=0.3)
    # Below the panel: inside it, the legend would hide fold points.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)


def _plot_curves(ax: Any, fold_results: Sequence[FoldResult]) -> None:
    """Validation L1 against training step, one line per fold."""
    drawn = 0
    results = sorted(fold_results, key=lambda r: r.fold_id)
    for result in results:
        points = []
        for point in result.learning_curve:
            step, value = _finite(point.get("step")), _finite(point.get(CURVE_METRIC))
            if step is not None and value is not None:
                points.append((step, value))
        if not points:
            continue
        points.sort()
        ax.plot(
            [s for s, _ in points],
            [v for _, v in points],
            "-o",
            ms=3,
            lw=1.2,
            label=f"fold {result.fold_id}",
        )
        drawn += 1
    ax.set_title(f"{CURVE_METRIC} vs step")
    ax.set_xlabel("step")
    ax.set_ylabel(CURVE_METRIC)
    ax.grid(True, alpha=0.3)
    if drawn == 0:
        ax.text(
            0.5, 0.5, "no learning curves", ha="center", va="center", transform=ax.transAxes, color="gray"
        )
    elif drawn <= MAX_LEGEND_FOLDS:
        ax.legend(fontsize=8, loc="best")


def render_figure(summary: CVSummary, fold_results: Sequence[FoldResult]) -> Figure:
    """One row of panels: each headline metric per fold, then the learning curves."""
    names = headline_metrics(summary)
    ncols = len(names) + 1
    fig = Figure(figsize=(5.2 * ncols, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax, name in zip(axes, names, strict=False):
        _plot_metric(ax, summary, name)
    _plot_curves(axes[-1], fold_results)
    title = f"{summary.totals.n_succeeded} of {summary.totals.n_folds} folds succeeded"
    if summary.run_id:
        title = f"{summary.run_id}: {title}"
    fig.suptitle(title)
    return fig


def figure_png_bytes(summary: CVSummary, fold_results: Sequence[FoldResult], *, dpi: int = 100) -> bytes:
    """The report figure as PNG bytes (for a file and for the HTML data URI alike)."""
    fig = render_figure(summary, fold_results)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def write_png(summary: CVSummary, fold_results: Sequence[FoldResult], path: str | Path) -> Path:
    """Write the report figure to ``path`` atomically."""
    return write_bytes_atomic(path, figure_png_bytes(summary, fold_results))


def _fmt(value: Any) -> str:
    """Numbers to short text (4 significant digits for floats), None to a dash; always HTML-escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return html.escape(str(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    return html.escape(str(value))


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
tr.best td { background: #fff4d6; } tr.failed td { background: #fde8e8; }
pre { white-space: pre-wrap; margin: 0; font-size: 0.9em; text-align: left; }
.warn { color: #8a5a00; } img { max-width: 100%; border: 1px solid #ddd; }
"""


def _table(header: list[str], rows: list[tuple[str, list[str]]], left: int = 1) -> str:
    """An HTML table; cells must already be escaped. Each row is (css class, cells)."""
    head = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for cls, cells in rows:
        tds = "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(cells))
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(summary: CVSummary, png: bytes | None = None, comparison_png: bytes | None = None) -> str:
    """A self-contained HTML page of the summary, with ``png`` (and ``comparison_png``) embedded."""
    esc = html.escape
    cfg = summary.config
    totals = summary.totals
    run_id = summary.run_id
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>k-fold report{': ' + esc(str(run_id)) if run_id else ''}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>K-fold cross-validation report</h1>",
        f"<p>Run: <code>{esc(str(run_id)) if run_id else '–'}</code><br>",
        f"{totals.n_succeeded} of {totals.n_folds} folds succeeded ({totals.n_failed} failed, "
        f"{totals.n_missing} without a result); {totals.n_repeats} repeat(s); "
        f"total wall time {_fmt(totals.total_wall_s)} s</p>",
        f"<h2>Summary{_of_candidate(summary)} (mean ± half-width of the {esc(_confidence_label(summary))} "
        "t-interval)</h2>",
        _metrics_table(summary),
        _best_fold_line(summary.best_fold),
        *_selection_sections(summary, comparison_png),
    ]
    if summary.warnings:
        items = "".join(f"<li>{esc(str(w))}</li>" for w in summary.warnings)
        parts.append(f'<h2>Warnings</h2><ul class="warn">{items}</ul>')
    if summary.failed_folds:
        parts.append("<h2>Failed folds</h2>")
        parts.append(_failed_table(summary.failed_folds))
    parts.append("<h2>Folds</h2>")
    parts.append(_folds_table(summary))
    if summary.cost is not None:
        parts.append("<h2>Cost</h2>")
        parts.append(f"<p>Estimated cost: {html.escape(summary.cost.describe())}.</p>")
        parts.append(_cost_table(summary))
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            "<h2>Figure</h2>"
            f'<img src="data:image/png;base64,{data}" alt="per-fold metrics and learning curves">'
        )
    parts.append(
        f"<p><small>Selection: {esc(str(cfg.selection_metric))} ({esc(str(cfg.selection_mode))}); "
        "fold values are not independent (shared episodes, repeats), so intervals are optimistic.</small></p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _metrics_table(summary: CVSummary) -> str:
    """Each metric's mean ± half-width, interval, std, sem, min, max and n."""
    rows = []
    for name, s in summary.metrics.items():
        mean = _fmt(s.mean)
        if s.ci_half_width is not None:
            mean_pm = f"{mean} ± {_fmt(s.ci_half_width)}"
            interval = f"[{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]"
        else:
            mean_pm, interval = mean, "– (n = 1)"
        corrected = _interval(s.corrected_ci_low, s.corrected_ci_high)
        cells = [html.escape(name), mean_pm, interval, corrected, _fmt(s.std), _fmt(s.sem), _fmt(s.min)]
        rows.append(("", [*cells, _fmt(s.max), _fmt(s.n)]))
    conf = html.escape(_confidence_label(summary))
    header = ["metric", "mean ± half-width", f"{conf} t-interval", f"{conf} corrected interval", "std", "sem"]
    return _table([*header, "min", "max", "n"], rows)


def _of_candidate(summary: CVSummary) -> str:
    if summary.candidate is None:
        return ""
    chosen = " (chosen)" if summary.comparison is not None else ""
    return f" of {html.escape(summary.candidate)}{chosen}"


def _interval(low: float | None, high: float | None) -> str:
    return "–" if low is None or high is None else f"[{_fmt(low)}, {_fmt(high)}]"


def _best_fold_line(best: BestFold) -> str:
    esc = html.escape
    return (
        f"<p>Best fold by <code>{esc(str(best.metric))}</code> ({esc(str(best.mode))}): "
        f"<b>fold {_fmt(best.fold_id)}</b> (repeat {_fmt(best.repeat)}, index {_fmt(best.index)}) "
        f"with {_fmt(best.value)}.</p>"
    )


def _failed_table(failed_folds: Sequence[FailedFold]) -> str:
    rows = [
        (
            "failed",
            [
                _fmt(f.fold_id),
                _fmt(f.repeat),
                _fmt(f.index),
                f"<pre>{html.escape(str(f.error))}</pre>",
                _fmt(f.last_progress),
            ],
        )
        for f in failed_folds
    ]
    return _table(["fold", "repeat", "index", "error", "last progress"], rows, left=5)


def _cost_table(summary: CVSummary) -> str:
    """One row per fold that reports a cost: where it ran, what it used, its dollar estimate."""
    rows = []
    for row in summary.folds:
        c = row.cost
        if c is None:
            continue
        where = c.device if c.accelerator is None else f"{c.accelerator} x {c.accelerator_count}"
        usd = "–" if c.usd is None else f"${c.usd:,.4f}"
        cells = [_fmt(row.fold_id), html.escape(where), _fmt(c.priced_gpu), _fmt(c.cpu_cores)]
        rows.append(("", [*cells, _fmt(c.wall_s), _fmt(c.gpu_s), _fmt(c.cpu_s), usd]))
    header = ["fold", "ran on", "priced as", "CPU cores", "wall s", "GPU-s", "CPU-s", "est. USD"]
    return _table(header, rows, left=3)


def _folds_table(summary: CVSummary) -> str:
    """One row per fold: the best fold highlighted, failed ones marked."""
    metric_names = list(summary.metrics)
    rows = []
    for row in summary.folds:
        cls = "best" if row.fold_id == summary.best_fold.fold_id else ("" if row.ok else "failed")
        cells = [_fmt(row.fold_id), _fmt(row.repeat), _fmt(row.index), _fmt(row.status)]
        cells += [_fmt(row.metrics.get(n)) for n in metric_names]
        cells += [_fmt(row.steps), _fmt(row.wall_s), _fmt(row.best_step)]
        rows.append((cls, cells))
    names = [html.escape(n) for n in metric_names]
    return _table(["fold", "repeat", "index", "status", *names, "steps", "wall s", "best step"], rows)


def write_html(summary: CVSummary, path: str | Path, png: bytes | None = None) -> Path:
    """Write the HTML report to ``path`` atomically."""
    return write_text_atomic(path, render_html(summary, png))


# ------------------------------------------------------------------------------ comparing candidates


def _selection_sections(summary: CVSummary, comparison_png: bytes | None) -> list[str]:
    """The sections on intervals, rates, candidates, the selection, the correlation and the final test."""
    parts = [_intervals_note(summary), _success_rates(summary)]
    if summary.comparison is not None:
        parts += _comparison_sections(summary.comparison)
    if summary.correlation is not None:
        parts.append(_correlation_section(summary.correlation))
    if comparison_png is not None:
        data = base64.b64encode(comparison_png).decode("ascii")
        parts.append(
            f'<img src="data:image/png;base64,{data}" alt="candidates fold by fold, val L1 against success">'
        )
    if summary.final_test is not None:
        parts.append(_final_test_section(summary.final_test))
    return [p for p in parts if p]


def _intervals_note(summary: CVSummary) -> str:
    methods = summary.intervals
    if methods is None:
        return ""
    esc = html.escape
    ratio = "unknown" if methods.test_train_ratio is None else f"{methods.test_train_ratio:.3g}"
    return (
        f"<p><small><b>t-interval</b>: {esc(methods.ci)}. "
        f"<b>corrected interval</b>: {esc(methods.corrected_ci)}"
        f" (J = {methods.n_splits} folds, n_val/n_train = {ratio}); comparisons use this one. "
        f"<b>rate interval</b>: {esc(methods.rate_ci)}.</small></p>"
    )


def _rate(rate: RateInterval) -> str:
    return f"{rate.successes}/{rate.trials} = {rate.rate:.0%} [{rate.ci_low:.0%}, {rate.ci_high:.0%}]"


def _success_rates(summary: CVSummary) -> str:
    rows = []
    for name, rates in summary.success_rates.items():
        per_fold = "; ".join(f"fold {f.fold_id}: {_rate(f)}" for f in rates.per_fold)
        rows.append(("", [html.escape(name), _rate(rates.pooled), html.escape(per_fold)]))
    if not rows:
        return ""
    conf = html.escape(_confidence_label(summary))
    header = ["metric", f"pooled over folds ({conf} Wilson)", f"per fold ({conf} Wilson)"]
    return "<h2>Success over rollouts</h2>" + _table(header, rows, left=3)


def _comparison_sections(comparison: Comparison) -> list[str]:
    esc = html.escape
    selection = comparison.selection
    parts = ["<h2>Candidates side by side (mean [corrected interval])</h2>", _candidates_table(comparison)]
    reference = f"{comparison.reference} ({'baseline' if comparison.reference_is_baseline else 'best mean'})"
    parts.append(f"<h2>Paired differences against {esc(reference)}</h2>")
    parts.append(_comparisons_table(comparison))
    parts.append(
        f"<p><b>Chosen: {esc(selection.chosen)}</b>. Rule: {esc(selection.rule)} (tie break "
        f"<code>{esc(selection.tie_break)}</code>). {esc(selection.reason)}.</p>"
    )
    if comparison.warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in comparison.warnings)
        parts.append(f'<ul class="warn">{items}</ul>')
    return parts


def _candidates_table(comparison: Comparison) -> str:
    names = list(comparison.candidates[0].summary.metrics)
    rows = []
    for candidate in comparison.candidates:
        s = candidate.summary
        cells = [html.escape(candidate.name), html.escape(json.dumps(candidate.overrides, sort_keys=True))]
        for name in names:
            stats = s.metrics.get(name)
            cells.append(
                "–"
                if stats is None
                else f"{_fmt(stats.mean)} {_interval(stats.corrected_ci_low, stats.corrected_ci_high)}"
            )
        pooled = s.success_rates.get("sim_success_rate")
        cells.append("–" if pooled is None else _rate(pooled.pooled))
        cls = "best" if candidate.name == comparison.selection.chosen else ""
        rows.append((cls, cells))
    header = ["candidate", "overrides", *[html.escape(n) for n in names], "rollouts pooled (Wilson)"]
    return _table(header, rows, left=2)


def _comparisons_table(comparison: Comparison) -> str:
    rows = []
    for c in comparison.comparisons:
        pooled = "–"
        if c.pooled_test is not None:
            pooled = f"{c.pooled_test.method} p={_fmt(c.pooled_test.p_value)}"
        diffs = ", ".join(f"{f}: {_fmt(d)}" for f, d in zip(c.fold_ids, c.differences, strict=True))
        cells = [html.escape(c.candidate), html.escape(c.metric), _fmt(c.mean_difference)]
        cells += [_interval(c.ci_low, c.ci_high), _fmt(c.p_value), _fmt(c.plain_p_value), pooled]
        cells += [_fmt(c.minimum_detectable_difference), html.escape(c.verdict), html.escape(diffs)]
        rows.append(("", cells))
    power = f"{comparison.power:.0%}"
    header = ["candidate", "metric", "mean difference", "corrected interval", "p (corrected)", "p (plain t)"]
    header += ["pooled rollouts", f"detectable at {power} power", "verdict", "per fold"]
    return _table(header, rows, left=2)


def _correlation_section(correlation: RankCorrelation) -> str:
    rho = (
        "undefined (too few points or no variation)" if correlation.rho is None else f"{correlation.rho:.3f}"
    )
    p = (
        ""
        if correlation.p_value is None
        else f", p = {correlation.p_value:.3g} (indicative: points share folds)"
    )
    return (
        "<h2>Offline against closed loop</h2><p>Spearman's rank correlation of "
        f"{html.escape(correlation.x)} and {html.escape(correlation.y)} over {correlation.n} "
        f"(candidate, fold) points: rho = {rho}{p}. "
        "A good offline proxy would give rho near -1.</p>"
    )


def _final_test_section(test: FinalTest) -> str:
    esc = html.escape
    metrics = ", ".join(f"{esc(k)} {_fmt(v)}" for k, v in test.metrics.items()) or "none (no hold-out)"
    success = "" if test.success is None else f"<br>Closed loop: {_rate(test.success)} (Wilson)"
    return (
        f"<h2>Final test: {esc(test.candidate)} refit</h2><p>{esc(test.note)}.<br>"
        f"Trained on {test.n_train_episodes} episodes, tested on {test.n_test_episodes}: "
        f"{metrics}{success}<br>"
        f"Model to ship: <code>{esc(test.model_path)}</code></p>"
    )


def comparison_figure(summary: CVSummary) -> Figure | None:
    """Each headline metric fold by fold across candidates (paired lines), and val L1 against success."""
    comparison, correlation = summary.comparison, summary.correlation
    names = headline_metrics(summary) if comparison is not None else []
    scatter = correlation is not None and correlation.n >= 2
    if not names and not scatter:
        return None
    ncols = len(names) + int(scatter)
    fig = Figure(figsize=(5.2 * ncols, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax, name in zip(axes, names, strict=False):
        _plot_paired(ax, comparison, name)
    if scatter:
        _plot_correlation(axes[-1], correlation)
    return fig


def _plot_paired(ax: Any, comparison: Comparison, name: str) -> None:
    labels = [c.name for c in comparison.candidates]
    by_fold: dict[int, list[float | None]] = {}
    for position, candidate in enumerate(comparison.candidates):
        for row in candidate.summary.folds:
            value = _finite(row.metrics.get(name)) if row.ok else None
            by_fold.setdefault(row.fold_id, [None] * len(labels))[position] = value
    for fold_id, values in sorted(by_fold.items()):
        points = [(x, y) for x, y in enumerate(values) if y is not None]
        ax.plot([x for x, _ in points], [y for _, y in points], "-o", color="gray", alpha=0.6, ms=4, lw=1)
        if points:
            ax.annotate(
                f"{fold_id}", points[-1], fontsize=7, color="gray", xytext=(4, 0), textcoords="offset points"
            )
    means = [
        c.summary.metrics[name].mean if name in c.summary.metrics else math.nan for c in comparison.candidates
    ]
    ax.plot(range(len(labels)), means, "D", color="tab:blue", ms=8, label="mean")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_title(f"{name}: each line one fold")
    ax.set_ylabel(name)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _plot_correlation(ax: Any, correlation: RankCorrelation) -> None:
    names = list(dict.fromkeys(p.candidate for p in correlation.points))
    for name in names:
        points = [p for p in correlation.points if p.candidate == name]
        ax.plot([p.x for p in points], [p.y for p in points], "o", ms=6, label=name)
    rho = "undefined" if correlation.rho is None else f"{correlation.rho:.2f}"
    ax.set_title(f"Spearman rho = {rho} (n = {correlation.n})")
    ax.set_xlabel(correlation.x)
    ax.set_ylabel(correlation.y)
    ax.grid(True, alpha=0.3)
    if len(names) <= MAX_LEGEND_FOLDS:
        ax.legend(fontsize=8)


def comparison_png_bytes(summary: CVSummary, *, dpi: int = 100) -> bytes | None:
    fig = comparison_figure(summary)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
