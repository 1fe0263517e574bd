"""Aggregate k-fold results into one summary: per-metric mean, spread and confidence interval.

Why a separate step: each fold trains on its own machine and returns a :class:`FoldResult` (see the
fold trainer). Only after all folds are in can we say how good the recipe is *and how sure we are*: a single
split hides the large variance between splits that robot-policy training shows (closed-loop success moves
by tens of percent between seeds). The :class:`CVSummary` built here is small and its ``to_dict()`` is
JSON-safe because it travels through Airflow XCom; the bulky parts (learning curves, checkpoints, full
error texts) stay in the fold results and in the files that :func:`write_outputs` writes.

Statistics. For each metric over the n folds that report it: mean, sample standard deviation (ddof=1),
standard error ``std / sqrt(n)`` and a two-sided Student-t interval ``mean ± t_{(1+c)/2, n-1} * sem``.
The t-interval assumes the fold values are independent draws. They are not quite: folds share training
episodes, and with *repeated* k-fold the same episodes are held out once per repeat, so the folds of
different repeats are strongly correlated. The interval is therefore optimistic (too narrow), the more so
with more repeats. We still compute it the same way, as is common practice, and say so in the summary's
``warnings`` when there is more than one repeat. The interval is not clipped to a metric's natural range
(a success rate's interval may reach below 0 with few folds): that is what the data supports.

Failed folds are never averaged away silently: they are listed with their errors, and
``min_successful_folds`` (default: all folds) makes :func:`summarize` raise
:class:`NotEnoughFoldsError` rather than report a mean over too few folds.

:func:`summarize` is a list of steps: index the results by fold id (refusing duplicates), classify each
fold into a summary row (failed or succeeded), check there are enough, then the per-metric statistics
and the best fold.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lerobot_kfold import comparison
from lerobot_kfold.atomic_io import write_bytes_atomic, write_json_atomic, write_text_atomic
from lerobot_kfold.declared import check_declared, setting
from lerobot_kfold.results import (
    BestFold,
    CVSummary,
    FailedFold,
    FoldResult,
    FoldRow,
    MetricStats,
    RunCost,
    SuccessRates,
    Totals,
    finite_float,
    json_safe,
)
from lerobot_kfold.splits import MAX_MAP_LENGTH

__all__ = [
    "AggregateConfig",
    "CVSummary",
    "FoldResult",
    "MissingMetricError",
    "NotEnoughFoldsError",
    "folds_table",
    "summarize",
    "write_outputs",
]

# Error texts can be whole tracebacks; the summary goes to XCom, so keep only the head there.
# folds.csv (written from the fold results) keeps the full text.
MAX_ERROR_CHARS = 2000

# Error recorded for a fold that was expected (``expected_folds``) but returned no result.
NO_RESULT_ERROR = "no result"


class NotEnoughFoldsError(ValueError):
    """Fewer folds succeeded than ``min_successful_folds`` requires.

    Raised instead of averaging over fewer folds, which would silently bias the estimate (folds that
    fail are often the hard splits). Carries the counts and the failed folds for the caller to log.
    """

    def __init__(self, n_succeeded: int, n_required: int, n_folds: int, failed: list[FailedFold]):
        self.n_succeeded = n_succeeded
        self.n_required = n_required
        self.n_folds = n_folds
        self.failed = failed
        lines = [f"fold {f.fold_id}: {f.error}" for f in failed]
        super().__init__(
            f"only {n_succeeded} of {n_folds} folds succeeded, but {n_required} are required "
            f"(min_successful_folds). Failed folds:\n  "
            + ("\n  ".join(lines) if lines else "(none)")
            + "\nFix the failures and rerun those folds, or lower min_successful_folds to accept "
            "a summary over fewer folds."
        )


class MissingMetricError(ValueError):
    """The selection metric appears in no successful fold, so no best fold can be chosen."""


# Metrics a fold reports that can pick the best fold, and which way is better.
METRIC_DIRECTIONS: dict[str, Literal["min", "max"]] = {
    "val_l1": "min",
    "best_val_l1": "min",
    "val_l1_normalized": "min",
    "sim_success_rate": "max",
}


@dataclass(frozen=True)
class AggregateConfig:
    """How to aggregate fold results and pick the best fold (declared run settings, see ``declared``)."""

    # "val_l1" is the held-out L1 action error in action units, comparable across folds;
    # "sim_success_rate" needs the simulator evaluation (sim_eval_episodes > 0).
    selection_metric: str = setting(
        "val_l1",
        "Metric that picks the best fold (val_l1: lowest; sim_success_rate: highest).",
        choices=tuple(METRIC_DIRECTIONS),
    )
    # Fewer successes raise NotEnoughFoldsError instead of averaging fewer folds silently.
    min_successful_folds: int = setting(
        0,
        "Fewest successful folds for a summary; 0 means every fold must succeed.",
        minimum=0,
        maximum=MAX_MAP_LENGTH,
    )
    # Coverage of the two-sided Student-t interval around each metric's mean.
    confidence: float = setting(0.95, "Coverage of the confidence intervals.", above=0, below=1)

    def __post_init__(self) -> None:
        check_declared(self)

    @property
    def selection_mode(self) -> Literal["min", "max"]:
        """'min' when lower is better (losses, errors), 'max' when higher is better (success rate)."""
        return METRIC_DIRECTIONS[self.selection_metric]

    def required_folds(self, n_folds: int) -> int:
        return self.min_successful_folds or n_folds


def _short_error(error: Any) -> str:
    text = str(error)
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + f"... [{len(text) - MAX_ERROR_CHARS} more characters in folds.csv]"
    return text


# Parts of a fold's resume key that differ between the folds of one run.
_PER_FOLD_KEYS = {"fold_id", "train_episodes", "val_episodes", "output_dir"}


def check_one_run(fold_results: Sequence[FoldResult]) -> None:
    """Refuse results of different runs (other settings or another dataset) before they are averaged.

    The folds of one run share everything in their resume key but the fold itself.
    """
    keyed = [(r, r.resume_key) for r in fold_results if isinstance(r.resume_key, dict)]
    if not keyed:
        return
    first, reference = keyed[0]
    shared = {k: v for k, v in reference.items() if k not in _PER_FOLD_KEYS}
    for result, key in keyed[1:]:
        other = {k: v for k, v in key.items() if k not in _PER_FOLD_KEYS}
        differing = sorted(k for k in shared.keys() | other.keys() if shared.get(k) != other.get(k))
        if differing:
            raise ValueError(
                f"fold {result.fold_id} and fold {first.fold_id} are results of different runs (they differ "
                f"in {', '.join(differing)}); aggregate the folds of one run, or pass each run's folder"
            )


def summarize(
    fold_results: Sequence[FoldResult],
    config: AggregateConfig | None = None,
    *,
    expected_folds: int | None = None,
    run_id: str | None = None,
) -> CVSummary:
    """Summarize fold results: per-metric statistics, best fold, failed folds, per-fold rows.

    A fold counts as successful when its ``status`` is ``"ok"``; anything else is failed. With
    ``expected_folds`` the fold ids ``0 .. expected_folds-1`` are expected and any without a result
    counts as failed with error ``"no result"`` (a lost task must not shrink the average unnoticed).

    Metrics are whatever the successful folds report under ``metrics``. A metric missing (or NaN/inf)
    in some successful folds is aggregated over the folds that have it; its ``n`` and
    ``missing_fold_ids`` show this and a line is added to ``warnings``. See the module docstring for
    why the t-interval is optimistic with repeated k-fold.

    Raises ``ValueError`` for malformed input (no results, duplicate ``fold_id``, ids outside
    ``expected_folds``), :class:`NotEnoughFoldsError` when too few folds succeeded, and
    :class:`MissingMetricError` when no successful fold reports the selection metric.
    """
    config = config or AggregateConfig()
    by_id, missing_ids = index_results(fold_results, expected_folds)
    folds = classify_folds(by_id, missing_ids)
    n_required = config.required_folds(len(folds.rows))
    if len(folds.succeeded) < n_required:
        raise NotEnoughFoldsError(len(folds.succeeded), n_required, len(folds.rows), folds.failed)
    names = metric_names(folds, config.selection_metric)
    ok_results = [r for r in by_id.values() if r.ok]
    ratio = comparison.test_train_ratio(ok_results)
    metrics, warnings = metric_statistics(names, folds, float(config.confidence), ratio)
    best = best_fold(folds, config)
    totals = count_totals(folds, len(missing_ids))
    cost = run_cost(folds.rows)
    if totals.n_repeats > 1:
        warnings.append(
            f"{totals.n_repeats} repeats: folds of different repeats share held-out episodes and are not "
            "independent, so the t-intervals are optimistic (too narrow)"
        )
    return CVSummary(
        run_id=run_id,
        config=config,
        totals=totals,
        metrics=metrics,
        best_fold=best,
        failed_folds=folds.failed,
        folds=folds.rows,
        warnings=warnings,
        success_rates=_success_rates(ok_results, float(config.confidence)),
        intervals=comparison.interval_methods(ok_results, len(folds.rows)),
        cost=cost,
    )


def _success_rates(results: Sequence[FoldResult], confidence: float) -> dict[str, SuccessRates]:
    rates = comparison.success_rates(results, confidence)
    return {} if rates is None else {comparison.SUCCESS_METRIC: rates}


def index_results(
    fold_results: Sequence[FoldResult], expected_folds: int | None
) -> tuple[dict[int, FoldResult], list[int]]:
    """The results by fold id, and the expected fold ids that have none. Refuses ambiguous input."""
    if expected_folds is not None and (
        isinstance(expected_folds, bool) or not isinstance(expected_folds, int) or expected_folds < 1
    ):
        raise ValueError(f"expected_folds must be a positive integer or None, got {expected_folds!r}")
    results = list(fold_results)
    if not results and expected_folds is None:
        raise ValueError("no fold results to summarize; pass expected_folds to report them all as missing")
    by_id: dict[int, FoldResult] = {}
    for position, result in enumerate(results):
        if not isinstance(result, FoldResult):
            raise TypeError(
                f"fold result #{position} is a {type(result).__name__}, not a FoldResult; "
                "read result.json dicts with FoldResult.from_dict first"
            )
        fid = result.fold_id
        if fid in by_id:
            raise ValueError(
                f"two results for fold_id {fid}; pass one result per fold "
                "(e.g. the latest try of a retried fold)"
            )
        if expected_folds is not None and not 0 <= fid < expected_folds:
            raise ValueError(
                f"fold_id {fid} is outside 0..{expected_folds - 1} (expected_folds={expected_folds}); "
                "expected_folds must count every fold of every repeat"
            )
        by_id[fid] = result
    missing_ids = [] if expected_folds is None else [i for i in range(expected_folds) if i not in by_id]
    return by_id, missing_ids


@dataclass(frozen=True)
class ClassifiedFolds:
    """Every fold as a summary row, split into the failed ones and the ids of the successful ones."""

    rows: list[FoldRow]
    failed: list[FailedFold]
    succeeded: list[int]

    def values(self, name: str) -> list[tuple[int, float | None]]:
        """``(fold_id, value)`` of metric ``name`` in every successful fold (None where not finite)."""
        by_id = {row.fold_id: row for row in self.rows}
        return [(fid, by_id[fid].metrics.get(name)) for fid in self.succeeded]


def classify_folds(by_id: Mapping[int, FoldResult], missing_ids: list[int]) -> ClassifiedFolds:
    """One row per fold in fold-id order; a fold without a result is failed with ``"no result"``."""
    rows: list[FoldRow] = []
    failed: list[FailedFold] = []
    succeeded: list[int] = []
    for fid in sorted(set(by_id) | set(missing_ids)):
        result = by_id.get(fid)
        if result is None:
            rows.append(
                FoldRow(
                    fold_id=fid,
                    repeat=None,
                    index=None,
                    status="missing",
                    metrics={},
                    steps=None,
                    wall_s=None,
                    best_step=None,
                )
            )
            failed.append(FailedFold(fold_id=fid, repeat=None, index=None, error=NO_RESULT_ERROR))
            continue
        rows.append(
            FoldRow(
                fold_id=fid,
                repeat=result.repeat,
                index=result.index,
                status=result.status,
                metrics={name: finite_float(value) for name, value in result.metrics.items()},
                steps=result.steps,
                wall_s=json_safe(result.wall_s),
                best_step=result.best_step,
                cost=result.cost,
            )
        )
        if result.ok:
            succeeded.append(fid)
        else:
            error = result.error or f"status {result.status!r} without an error message"
            failed.append(
                FailedFold(fold_id=fid, repeat=result.repeat, index=result.index, error=_short_error(error))
            )
    return ClassifiedFolds(rows, failed, succeeded)


def metric_names(folds: ClassifiedFolds, selection_metric: str) -> list[str]:
    """Metric names of the successful folds in order of first appearance, the selection metric first."""
    by_id = {row.fold_id: row for row in folds.rows}
    names: list[str] = []
    for fid in folds.succeeded:
        for name in by_id[fid].metrics:
            if name not in names:
                names.append(name)
    if selection_metric not in names:
        raise MissingMetricError(
            f"selection metric {selection_metric!r} is not reported by any successful fold; "
            f"available metrics: {', '.join(sorted(names)) or '(none)'}. "
            "Set selection_metric to one of these."
        )
    names.remove(selection_metric)
    return [selection_metric, *names]


def metric_statistics(
    names: list[str], folds: ClassifiedFolds, confidence: float, ratio: float | None = None
) -> tuple[dict[str, MetricStats], list[str]]:
    """Statistics of each metric over the successful folds that have a finite value, and warnings."""
    stats: dict[str, MetricStats] = {}
    warnings: list[str] = []
    for name in names:
        have = folds.values(name)
        values = [v for _, v in have if v is not None]
        lacking = [fid for fid, v in have if v is None]
        if not values:
            warnings.append(f"metric {name!r} is NaN or infinite in every successful fold; not aggregated")
            continue
        if lacking:
            warnings.append(
                f"metric {name!r} aggregated over {len(values)} of {len(folds.succeeded)} successful folds "
                f"(missing, NaN or infinite in folds {', '.join(map(str, lacking))})"
            )
        stats[name] = metric_stats(values, confidence, lacking, ratio)
    return stats, warnings


def metric_stats(
    values: list[float], confidence: float, missing_fold_ids: list[int], ratio: float | None = None
) -> MetricStats:
    """Mean, sample std, sem and t-interval of ``values``; spread fields are None when n == 1.

    With ``ratio`` (a fold's held-out/training episode ratio) also the corrected resampled t-interval.
    """
    n = len(values)
    arr = np.asarray(values, dtype=float)
    mean = float(arr[0]) if (arr == arr[0]).all() else float(arr.mean())
    low, high = float(arr.min()), float(arr.max())
    std = sem = half = None
    if n >= 2:
        # Identical values: report exactly 0, not the rounding residue of the mean (e.g. 3e-17).
        std = 0.0 if low == high else float(arr.std(ddof=1))
        sem = std / math.sqrt(n)
        from scipy import stats  # lazily: every fold process imports this module, few need scipy

        half = float(stats.t.ppf((1.0 + confidence) / 2.0, df=n - 1)) * sem
    corrected = None if ratio is None else comparison.corrected_t(values, ratio, confidence)
    return MetricStats(
        n=n,
        mean=mean,
        std=std,
        sem=sem,
        ci_low=None if half is None else mean - half,
        ci_high=None if half is None else mean + half,
        ci_half_width=half,
        min=low,
        max=high,
        missing_fold_ids=missing_fold_ids,
        corrected_ci_low=None if corrected is None else corrected.ci_low,
        corrected_ci_high=None if corrected is None else corrected.ci_high,
        corrected_ci_half_width=None if corrected is None else corrected.ci_high - corrected.mean,
    )


def best_fold(folds: ClassifiedFolds, config: AggregateConfig) -> BestFold:
    """The successful fold with the best finite selection-metric value; ties go to the lowest fold_id."""
    candidates = [(fid, v) for fid, v in folds.values(config.selection_metric) if v is not None]
    if not candidates:
        raise MissingMetricError(
            f"selection metric {config.selection_metric!r} is NaN or infinite in every successful fold; "
            "no best fold can be chosen"
        )
    pick = min if config.selection_mode == "min" else max
    best_id, best_value = pick(candidates, key=lambda item: item[1])
    row = next(r for r in folds.rows if r.fold_id == best_id)
    return BestFold(
        fold_id=best_id,
        repeat=row.repeat,
        index=row.index,
        metric=config.selection_metric,
        mode=config.selection_mode,
        value=best_value,
    )


def count_totals(folds: ClassifiedFolds, n_missing: int) -> Totals:
    """Fold counts, distinct repeats and the wall time summed over folds that report it."""
    repeats = {row.repeat for row in folds.rows if row.repeat is not None}
    wall = [finite_float(row.wall_s) for row in folds.rows]
    return Totals(
        n_folds=len(folds.rows),
        n_succeeded=len(folds.succeeded),
        n_failed=len(folds.failed),
        n_missing=n_missing,
        n_repeats=max(len(repeats), 1),
        total_wall_s=float(sum(w for w in wall if w is not None)),
    )


def run_cost(rows: Sequence[FoldRow | FoldResult]) -> RunCost | None:
    """The run's cost over every fold that reports one, whatever its status (its GPU time was paid).

    A fold that crashed reports none: its ``error.json`` has no cost, so the total is a lower bound then.
    """
    costs = [row.cost for row in rows if row.cost is not None]
    if not costs:
        return None
    priced = [c for c in costs if c.usd is not None]
    seen = [c.gpu_s for c in costs if c.gpu_s is not None]
    return RunCost(
        n_folds=len(costs),
        total_wall_s=round(sum(c.wall_s for c in costs), 3),
        total_cpu_s=round(sum(c.cpu_s for c in costs), 3),
        total_gpu_s=round(sum(seen), 3) if seen else None,
        total_usd=round(sum(c.usd for c in priced if c.usd is not None), 6) if priced else None,
        n_priced=len(priced),
        priced_gpus=sorted({c.priced_gpu for c in priced if c.priced_gpu}),
        prices_as_of=next((c.prices_as_of for c in priced if c.prices_as_of), None),
    )


# Columns of folds.csv before the metric columns.
_BASE_COLUMNS = [
    "fold_id",
    "repeat",
    "index",
    "status",
    "error",
    "steps",
    "wall_s",
    "steps_per_s",
    "device",
    "final_train_loss",
    "best_step",
    "n_train_episodes",
    "n_val_episodes",
    "accelerator",
    "gpu_s",
    "cpu_s",
    "cost_usd",
]
# The base columns read from a fold's full result (None for a fold without one).
_RESULT_COLUMNS = _BASE_COLUMNS[_BASE_COLUMNS.index("steps") :]


def folds_table(summary: CVSummary, fold_results: Sequence[FoldResult]) -> Any:
    """One row per fold of the summary (missing folds included) as a pandas DataFrame.

    Built from the full fold results so that error texts are complete. Metric columns carry the
    metric name; one that collides with a base column is prefixed with ``metric_``.
    """
    import pandas as pd

    by_id = {r.fold_id: r for r in fold_results}
    records = []
    for row in summary.folds:
        r = by_id.get(row.fold_id)
        rec: dict[str, Any] = {"fold_id": row.fold_id, "repeat": row.repeat, "index": row.index}
        rec["status"] = row.status
        rec["error"] = NO_RESULT_ERROR if r is None else r.error
        rec.update(_result_columns(r))
        for name, value in row.metrics.items():
            rec[f"metric_{name}" if name in _BASE_COLUMNS else name] = value
        records.append(rec)
    metric_cols = [c for rec in records for c in rec if c not in _BASE_COLUMNS]
    columns = _BASE_COLUMNS + list(dict.fromkeys(metric_cols))
    df = pd.DataFrame.from_records(records, columns=columns)
    # Keep whole numbers whole when some folds lack them (plain int columns would turn into 2000.0).
    for col in ("repeat", "index", "steps", "best_step", "n_train_episodes", "n_val_episodes"):
        with contextlib.suppress(TypeError, ValueError):  # not all integral: leave it as inferred
            df[col] = df[col].astype("Int64")
    return df


def _result_columns(result: FoldResult | None) -> dict[str, Any]:
    """The folds.csv columns taken from the full fold result (empty for a fold without one)."""
    if result is None:
        return dict.fromkeys(_RESULT_COLUMNS)
    return {
        "steps": result.steps,
        "wall_s": result.wall_s,
        "steps_per_s": result.steps_per_s,
        "device": result.device,
        "final_train_loss": result.final_train_loss,
        "best_step": result.best_step,
        "n_train_episodes": None if result.train_episodes is None else len(result.train_episodes),
        "n_val_episodes": None if result.val_episodes is None else len(result.val_episodes),
        "accelerator": None if result.cost is None else result.cost.accelerator,
        "gpu_s": None if result.cost is None else result.cost.gpu_s,
        "cpu_s": None if result.cost is None else result.cost.cpu_s,
        "cost_usd": None if result.cost is None else result.cost.usd,
    }


def candidates_table(summary: CVSummary, candidate_results: Mapping[str, Sequence[FoldResult]]) -> Any:
    """folds.csv of a comparison: every candidate's folds, a ``candidate`` column first."""
    import pandas as pd

    assert summary.comparison is not None
    tables = []
    for candidate in summary.comparison.candidates:
        table = folds_table(candidate.summary, candidate_results[candidate.name])
        table.insert(0, "candidate", candidate.name)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def write_outputs(
    summary: CVSummary,
    fold_results: Sequence[FoldResult],
    out_dir: str | Path,
    candidate_results: Mapping[str, Sequence[FoldResult]] | None = None,
) -> dict[str, str]:
    """Write ``folds.csv``, ``report.png``, ``report.html`` and ``summary.json`` into ``out_dir``.

    Every file is written atomically (temporary file + rename), so a reader sees the old or the new
    version, never a part. ``summary.json`` is written last: when it is there, the others are too.
    Returns the paths under the keys ``folds_csv``, ``report_png``, ``report_html``, ``summary_json``.
    With several candidates (``candidate_results`` by name, ``summary.comparison`` set) folds.csv holds
    every candidate's folds and ``comparison.png`` (key ``comparison_png``) shows them side by side.
    """
    from lerobot_kfold import report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "folds_csv": out / "folds.csv",
        "report_png": out / "report.png",
        "report_html": out / "report.html",
        "summary_json": out / "summary.json",
    }
    compared = summary.comparison is not None and candidate_results is not None
    table = candidates_table(summary, candidate_results) if compared else folds_table(summary, fold_results)
    write_text_atomic(paths["folds_csv"], table.to_csv(index=False))
    png = report.figure_png_bytes(summary, fold_results)
    write_bytes_atomic(paths["report_png"], png)
    comparison_png = report.comparison_png_bytes(summary)
    if compared and comparison_png is not None:
        paths["comparison_png"] = out / "comparison.png"
        write_bytes_atomic(paths["comparison_png"], comparison_png)
    write_text_atomic(paths["report_html"], report.render_html(summary, png, comparison_png))
    write_json_atomic(paths["summary_json"], summary.to_dict())
    return {key: str(path) for key, path in paths.items()}
