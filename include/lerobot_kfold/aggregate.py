"""Aggregate k-fold results into one summary: per-metric mean, spread and confidence interval.

Why a separate step: each fold trains on its own machine and returns a result dict (see the fold
trainer). Only after all folds are in can we say how good the recipe is *and how sure we are*: a single
split hides the large variance between splits that robot-policy training shows (closed-loop success moves
by tens of percent between seeds). The summary built here is small and JSON-safe because it travels
through Airflow XCom; the bulky parts (learning curves, checkpoints, full error texts) stay in the fold
results and in the files that :func:`write_outputs` writes.

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
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lerobot_kfold.atomic_io import write_bytes_atomic, write_json_atomic, write_text_atomic
from lerobot_kfold.declared import check_declared, setting
from lerobot_kfold.splits import MAX_MAP_LENGTH

__all__ = [
    "AggregateConfig",
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

    def __init__(self, n_succeeded: int, n_required: int, n_folds: int, failed: list[dict[str, Any]]):
        self.n_succeeded = n_succeeded
        self.n_required = n_required
        self.n_folds = n_folds
        self.failed = failed
        lines = [f"fold {f['fold_id']}: {f['error']}" for f in failed]
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


def _as_finite_float(value: Any) -> float | None:
    """A plain float for a finite real scalar; None for anything else (bools, strings, lists, NaN)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _is_real_scalar(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _plain(value: Any) -> Any:
    """Make a value JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def _short_error(error: Any) -> str:
    text = str(error)
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + f"... [{len(text) - MAX_ERROR_CHARS} more characters in folds.csv]"
    return text


def _metric_stats(values: list[float], confidence: float) -> dict[str, Any]:
    """Mean, sample std, sem and t-interval of ``values``; spread fields are None when n == 1."""
    n = len(values)
    arr = np.asarray(values, dtype=float)
    mean = float(arr[0]) if (arr == arr[0]).all() else float(arr.mean())
    out: dict[str, Any] = {
        "n": n,
        "mean": mean,
        "std": None,
        "sem": None,
        "ci_low": None,
        "ci_high": None,
        "ci_half_width": None,
        "min": float(arr.min()),
        "max": float(arr.max()),
    }
    if n >= 2:
        # Identical values: report exactly 0, not the rounding residue of the mean (e.g. 3e-17).
        std = 0.0 if out["min"] == out["max"] else float(arr.std(ddof=1))
        sem = std / math.sqrt(n)
        from scipy import stats  # lazily: every fold process imports this module, few need scipy

        half = float(stats.t.ppf((1.0 + confidence) / 2.0, df=n - 1)) * sem
        out.update(std=std, sem=sem, ci_low=mean - half, ci_high=mean + half, ci_half_width=half)
    return out


def _fold_id(result: Mapping[str, Any], position: int) -> int:
    fid = result.get("fold_id")
    if isinstance(fid, bool) or not isinstance(fid, numbers.Integral):
        raise ValueError(f"fold result #{position} has no integer 'fold_id' (got {fid!r})")
    return int(fid)


def summarize(
    fold_results: Sequence[Mapping[str, Any]],
    config: AggregateConfig | None = None,
    *,
    expected_folds: int | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Summarize fold results: per-metric statistics, best fold, failed folds, per-fold rows.

    A fold counts as successful when its ``status`` is ``"ok"``; anything else is failed. With
    ``expected_folds`` the fold ids ``0 .. expected_folds-1`` are expected and any without a result
    counts as failed with error ``"no result"`` (a lost task must not shrink the average unnoticed).

    Metrics are whatever finite real scalars the successful folds report under ``metrics``. A metric
    missing (or NaN/inf) in some successful folds is aggregated over the folds that have it; its ``n``
    and ``missing_fold_ids`` show this and a line is added to ``warnings``. Non-numeric entries and
    booleans are ignored. See the module docstring for why the t-interval is optimistic with repeated
    k-fold.

    Raises ``ValueError`` for malformed input (no results, missing or duplicate ``fold_id``),
    :class:`NotEnoughFoldsError` when too few folds succeeded, and :class:`MissingMetricError` when no
    successful fold reports the selection metric. The result passes ``json.dumps(allow_nan=False)``.
    """
    config = config or AggregateConfig()
    results = list(fold_results)
    if expected_folds is not None and (
        isinstance(expected_folds, bool) or not isinstance(expected_folds, int) or expected_folds < 1
    ):
        raise ValueError(f"expected_folds must be a positive integer or None, got {expected_folds!r}")
    if not results and expected_folds is None:
        raise ValueError("no fold results to summarize; pass expected_folds to report them all as missing")

    by_id: dict[int, Mapping[str, Any]] = {}
    for position, result in enumerate(results):
        fid = _fold_id(result, position)
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

    warnings: list[str] = []
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    succeeded: list[tuple[int, Mapping[str, Any]]] = []
    for fid in sorted(set(by_id) | set(missing_ids)):
        result = by_id.get(fid)
        if result is None:
            rows.append(
                {
                    "fold_id": fid,
                    "repeat": None,
                    "index": None,
                    "status": "missing",
                    "metrics": {},
                    "steps": None,
                    "wall_s": None,
                    "best_step": None,
                }
            )
            failed.append({"fold_id": fid, "repeat": None, "index": None, "error": NO_RESULT_ERROR})
            continue
        status = str(result.get("status", "missing status"))
        raw_metrics = result.get("metrics") or {}
        metrics: dict[str, float | None] = {}
        for name, value in raw_metrics.items():
            if _is_real_scalar(value):
                metrics[str(name)] = _as_finite_float(value)
        rows.append(
            {
                "fold_id": fid,
                "repeat": result.get("repeat"),
                "index": result.get("index"),
                "status": status,
                "metrics": metrics,
                "steps": result.get("steps"),
                "wall_s": result.get("wall_s"),
                "best_step": result.get("best_step"),
            }
        )
        if status == "ok":
            succeeded.append((fid, result))
        else:
            error = result.get("error") or f"status {status!r} without an error message"
            failed.append(
                {
                    "fold_id": fid,
                    "repeat": result.get("repeat"),
                    "index": result.get("index"),
                    "error": _short_error(error),
                }
            )

    n_folds = len(rows)
    n_required = config.required_folds(n_folds)
    if len(succeeded) < n_required:
        raise NotEnoughFoldsError(len(succeeded), n_required, n_folds, failed)

    # Metric names in order of first appearance, with the selection metric first.
    row_by_id = {row["fold_id"]: row for row in rows}
    names: list[str] = []
    for fid, _ in succeeded:
        for name in row_by_id[fid]["metrics"]:
            if name not in names:
                names.append(name)
    if config.selection_metric not in names:
        raise MissingMetricError(
            f"selection metric {config.selection_metric!r} is not reported by any successful fold; "
            f"available metrics: {', '.join(sorted(names)) or '(none)'}. "
            "Set selection_metric to one of these."
        )
    names.remove(config.selection_metric)
    names.insert(0, config.selection_metric)

    metric_summary: dict[str, dict[str, Any]] = {}
    for name in names:
        have = [(fid, row_by_id[fid]["metrics"].get(name)) for fid, _ in succeeded]
        values = [v for _, v in have if v is not None]
        lacking = [fid for fid, v in have if v is None]
        if not values:
            warnings.append(f"metric {name!r} is NaN or infinite in every successful fold; not aggregated")
            continue
        entry = _metric_stats(values, float(config.confidence))
        entry["missing_fold_ids"] = lacking
        if lacking:
            warnings.append(
                f"metric {name!r} aggregated over {len(values)} of {len(succeeded)} successful folds "
                f"(missing, NaN or infinite in folds {', '.join(map(str, lacking))})"
            )
        metric_summary[name] = entry

    sel = [(fid, row_by_id[fid]["metrics"].get(config.selection_metric)) for fid, _ in succeeded]
    sel = [(fid, v) for fid, v in sel if v is not None]
    if not sel:
        raise MissingMetricError(
            f"selection metric {config.selection_metric!r} is NaN or infinite in every successful fold; "
            "no best fold can be chosen"
        )
    pick = min if config.selection_mode == "min" else max
    best_id, best_value = pick(sel, key=lambda item: item[1])  # ties: the lowest fold_id wins
    best_row = row_by_id[best_id]

    repeats = {row["repeat"] for row in rows if row["repeat"] is not None}
    if len(repeats) > 1:
        warnings.append(
            f"{len(repeats)} repeats: folds of different repeats share held-out episodes and are not "
            "independent, so the t-intervals are optimistic (too narrow)"
        )
    wall = [_as_finite_float(row["wall_s"]) for row in rows]

    summary = {
        "run_id": run_id,
        "config": {**asdict(config), "selection_mode": config.selection_mode},
        "totals": {
            "n_folds": n_folds,
            "n_succeeded": len(succeeded),
            "n_failed": len(failed),
            "n_missing": len(missing_ids),
            "n_repeats": max(len(repeats), 1),
            "total_wall_s": float(sum(w for w in wall if w is not None)),
        },
        "metrics": metric_summary,
        "best_fold": {
            "fold_id": best_id,
            "repeat": best_row["repeat"],
            "index": best_row["index"],
            "metric": config.selection_metric,
            "mode": config.selection_mode,
            "value": best_value,
        },
        "failed_folds": failed,
        "folds": rows,
        "warnings": warnings,
    }
    return _plain(summary)


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
]


def folds_table(summary: Mapping[str, Any], fold_results: Sequence[Mapping[str, Any]]) -> Any:
    """One row per fold of the summary (missing folds included) as a pandas DataFrame.

    Built from the full fold results so that error texts are complete. Metric columns carry the
    metric name; one that collides with a base column is prefixed with ``metric_``.
    """
    import pandas as pd

    by_id = {int(r["fold_id"]): r for r in fold_results if "fold_id" in r}
    records = []
    for row in summary["folds"]:
        r = by_id.get(row["fold_id"], {})
        rec: dict[str, Any] = {
            "fold_id": row["fold_id"],
            "repeat": row["repeat"],
            "index": row["index"],
            "status": row["status"],
            "error": r.get("error") if r else NO_RESULT_ERROR,
            "steps": r.get("steps"),
            "wall_s": r.get("wall_s"),
            "steps_per_s": r.get("steps_per_s"),
            "device": r.get("device"),
            "final_train_loss": r.get("final_train_loss"),
            "best_step": r.get("best_step"),
            "n_train_episodes": len(r["train_episodes"]) if r.get("train_episodes") is not None else None,
            "n_val_episodes": len(r["val_episodes"]) if r.get("val_episodes") is not None else None,
        }
        for name, value in row["metrics"].items():
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


def write_outputs(
    summary: Mapping[str, Any], fold_results: Sequence[Mapping[str, Any]], out_dir: str | Path
) -> dict[str, str]:
    """Write ``folds.csv``, ``report.png``, ``report.html`` and ``summary.json`` into ``out_dir``.

    Every file is written atomically (temporary file + rename), so a reader sees the old or the new
    version, never a part. ``summary.json`` is written last: when it is there, the others are too.
    Returns the paths under the keys ``folds_csv``, ``report_png``, ``report_html``, ``summary_json``.
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
    write_text_atomic(paths["folds_csv"], folds_table(summary, fold_results).to_csv(index=False))
    png = report.figure_png_bytes(summary, fold_results)
    write_bytes_atomic(paths["report_png"], png)
    write_text_atomic(paths["report_html"], report.render_html(summary, png))
    write_json_atomic(paths["summary_json"], summary)
    return {key: str(path) for key, path in paths.items()}
