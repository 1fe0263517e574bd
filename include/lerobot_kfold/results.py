"""Typed results of a k-fold run: one fold's result, and the cross-validation summary over all folds.

Why typed: a fold result is written by the trainer, read back by a retry, carried through Airflow XCom
and Modal, summarized, tabulated and rendered. As plain dicts every reader had to guard every key; here
the shape is stated once and checked once, where the data enters (``from_dict``), and code inside the
library reads attributes. Values become dicts only where they cross JSON, XCom or a Modal call
(``to_dict``), and the dicts keep the keys the files always had (``result.json``, ``error.json``,
``summary.json``), so older files, the report and external readers keep working.

- :class:`FoldResult`: what training one fold produced (or why it failed: :meth:`FoldResult.failed`),
  with what it cost (:class:`FoldCost`).
- :class:`CVSummary`: per-metric statistics (:class:`MetricStats`), the best fold (:class:`BestFold`),
  the failed folds (:class:`FailedFold`), one row per fold (:class:`FoldRow`) and counts
  (:class:`Totals`), and the run's cost (:class:`RunCost`). Built by
  :func:`lerobot_kfold.aggregate.summarize`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # aggregate imports this module; the config is only needed for types and from_dict
    from lerobot_kfold.aggregate import AggregateConfig

__all__ = [
    "BestFold",
    "CVSummary",
    "CandidateSummary",
    "Comparison",
    "FailedFold",
    "FinalTest",
    "FoldCost",
    "FoldResult",
    "FoldRow",
    "IntervalMethods",
    "MetricStats",
    "PairedComparison",
    "PooledRolloutTest",
    "RankCorrelation",
    "RateInterval",
    "RunCost",
    "Selection",
    "SuccessRates",
    "Totals",
    "finite_float",
    "is_real_scalar",
    "json_safe",
]

OK = "ok"
FAILED = "failed"
INTERRUPTED = "interrupted"


# ---------------------------------------------------------------------------------------------- numbers


def is_real_scalar(value: Any) -> bool:
    """A real number (Python or numpy), not a bool: what counts as a metric value."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def finite_float(value: Any) -> float | None:
    """A plain float for a finite real scalar; None for anything else (bools, strings, lists, NaN)."""
    if not is_real_scalar(value):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def json_safe(value: Any) -> Any:
    """Make a value JSON-safe: numpy scalars to Python, non-finite floats to None, tuples to lists."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


# ---------------------------------------------------------------------------------------- field checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_str_mapping(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


# Each FoldResult field: the check its value must pass, and the words for the error message.
_INT = (_is_int, "an integer")
_OPT_INT = (_optional(_is_int), "an integer or null")
_OPT_NUMBER = (_optional(is_real_scalar), "a number or null")
_OPT_STR = (_optional(_is_str), "a string or null")
_OPT_INTS = (_optional(_list_of(_is_int)), "a list of integers or null")
_OPT_NUMBERS = (_optional(_list_of(is_real_scalar)), "a list of numbers or null")


@dataclass(frozen=True, kw_only=True)
class FoldCost:
    """Where one fold ran and what it used, measured where it ran; dollars only where a GPU is priced.

    ``usd`` is the wall time of the call that finished the fold times the price of the requested GPU
    (``priced_gpu``, what Modal bills); a resumed fold's earlier calls are not added. Backend local and
    the CLI price nothing: ``usd`` is None there and ``cpu_s`` is the number to read.
    """

    # torch's device ("cuda", "cpu", "mps"), the GPU model and count the process saw, and its CPU cores.
    device: str
    accelerator: str | None = None
    accelerator_count: int = 0
    cpu_cores: int = 1
    wall_s: float
    # CPU time of the fold's process (all threads); GPU-seconds as seen (wall x GPUs, None without one).
    cpu_s: float
    gpu_s: float | None = None
    priced_gpu: str | None = None
    usd_per_s: float | None = None
    usd: float | None = None
    prices_as_of: str | None = None

    def __post_init__(self) -> None:
        checks = {
            "device": (_is_str, "a string"),
            "accelerator": _OPT_STR,
            "accelerator_count": _INT,
            "cpu_cores": _INT,
            "wall_s": (is_real_scalar, "a number"),
            "cpu_s": (is_real_scalar, "a number"),
            "gpu_s": _OPT_NUMBER,
            "priced_gpu": _OPT_STR,
            "usd_per_s": _OPT_NUMBER,
            "usd": _OPT_NUMBER,
            "prices_as_of": _OPT_STR,
        }
        for name, (check, expected) in checks.items():
            if not check(getattr(self, name)):
                raise ValueError(f"fold cost field {name!r} must be {expected}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: Any) -> FoldCost:
        if not _is_str_mapping(data):
            raise ValueError(f"fold result field 'cost' must be an object, got {data!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise ValueError(f"fold result field 'cost' is incomplete: {exc}") from None


_FOLD_RESULT_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "fold_id": _INT,
    "repeat": _OPT_INT,
    "index": _OPT_INT,
    "status": (lambda v: isinstance(v, str) and bool(v), 'a non-empty string such as "ok" or "failed"'),
    "error": _OPT_STR,
    "traceback": _OPT_STR,
    "train_episodes": _OPT_INTS,
    "val_episodes": _OPT_INTS,
    "steps": _OPT_INT,
    "steps_this_run": _OPT_INT,
    "resumed_from_step": _OPT_INT,
    "wall_s": _OPT_NUMBER,
    "train_seconds": _OPT_NUMBER,
    "steps_per_s": _OPT_NUMBER,
    "device": _OPT_STR,
    "final_train_loss": _OPT_NUMBER,
    "metrics": (
        lambda v: _is_str_mapping(v) and all(is_real_scalar(x) for x in v.values()),
        "numbers by name",
    ),
    "val_mae_per_dim": _OPT_NUMBERS,
    "best_step": _OPT_INT,
    "best_val_mae_per_dim": _OPT_NUMBERS,
    "learning_curve": (_list_of(_is_str_mapping), "a list of objects (one per validation)"),
    "checkpoints": (
        lambda v: _is_str_mapping(v) and all(isinstance(x, str) for x in v.values()),
        "paths by name",
    ),
    "output_dir": _OPT_STR,
    # FoldTrainingConfig.resume_key(): the settings themselves (an object); a hash string is fine too.
    "resume_key": (_optional(lambda v: isinstance(v, dict | str)), "an object of settings or null"),
    "sim": (_optional(_is_str_mapping), "an object or null"),
    "cost": (_optional(lambda v: isinstance(v, FoldCost)), "an object of cost fields or null"),
}


# ------------------------------------------------------------------------------------------ fold result


@dataclass(frozen=True, kw_only=True)
class FoldResult:
    """One fold's outcome: written to ``result.json`` (``error.json`` when it failed).

    ``status`` is ``"ok"`` (trained to the end), ``"interrupted"`` (stopped by ``stop_at_step``; running
    the fold again resumes it) or ``"failed"`` (``error`` says why). Only ``"ok"`` folds are averaged.
    Field order is the key order of ``result.json``.
    """

    fold_id: int
    # Which repeat of k-fold, and the fold's position within it (None when a failure happened before
    # anyone knew, e.g. a result that never arrived).
    repeat: int | None = None
    index: int | None = None
    status: str
    # "ExceptionType: message" for a failed fold; None otherwise.
    error: str | None = None
    traceback: str | None = None
    train_episodes: list[int] | None = None
    val_episodes: list[int] | None = None
    # Optimizer steps done in total, and in this call (less than steps after a resume).
    steps: int | None = None
    steps_this_run: int | None = None
    resumed_from_step: int | None = None
    wall_s: float | None = None
    train_seconds: float | None = None
    steps_per_s: float | None = None
    device: str | None = None
    final_train_loss: float | None = None
    # The numbers aggregation averages: val_l1, val_l1_normalized, best_val_l1, sim_success_rate, ...
    metrics: dict[str, float] = field(default_factory=dict)
    val_mae_per_dim: list[float] | None = None
    best_step: int | None = None
    best_val_mae_per_dim: list[float] | None = None
    # One point per validation: {"step", "train_loss", "val_l1", "val_l1_normalized"}.
    learning_curve: list[dict[str, Any]] = field(default_factory=list)
    # {"last": <checkpoint folder>, "best": <best pretrained_model folder>}.
    checkpoints: dict[str, str] = field(default_factory=dict)
    output_dir: str | None = None
    # The settings that must match for a retry to reuse or resume this fold.
    resume_key: dict[str, Any] | None = None
    # Closed-loop rollout details (seeds, successes, seconds) when the simulator evaluation ran.
    sim: dict[str, Any] | None = None
    # Where it ran and what it used (None in results written before cost was recorded).
    cost: FoldCost | None = None

    def __post_init__(self) -> None:
        for name, (check, expected) in _FOLD_RESULT_CHECKS.items():
            value = getattr(self, name)
            if not check(value):
                raise ValueError(
                    f"fold result field {name!r} must be {expected}, got {value!r}. A result written by "
                    "lerobot_kfold's train_fold always is: re-run the fold, or remove the foreign file."
                )

    @classmethod
    def failed(
        cls, fold_id: int, repeat: int | None, index: int | None, error: str, traceback: str | None = None
    ) -> FoldResult:
        """The result of a fold that did not finish: what aggregation lists under ``failed_folds``."""
        return cls(
            fold_id=fold_id, repeat=repeat, index=index, status=FAILED, error=error, traceback=traceback
        )

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` / XCom form: every field, under its own name."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> FoldResult:
        """Read a result dict (``result.json``, ``error.json``, an XCom value); ``source`` names it in errors.

        Unknown keys are ignored, missing optional ones take their defaults. Metrics that are not real
        numbers (text, lists, booleans) are dropped, as aggregation always ignored them; NaN is kept
        (aggregation reports it as missing). Raises ``ValueError`` naming the problem for anything that
        is not a fold result.
        """
        where = f"{source}: " if source is not None else ""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}a fold result must be a JSON object, got {type(data).__name__}.")
        missing = [name for name in ("fold_id", "status") if data.get(name) is None]
        if missing:
            raise ValueError(
                f"{where}not a fold result: no {' or '.join(repr(m) for m in missing)} "
                f"(keys: {', '.join(sorted(map(str, data))) or 'none'}). "
                "Point at the result.json or error.json files of lerobot_kfold folds."
            )
        metrics = data.get("metrics")
        if metrics is not None and not isinstance(metrics, Mapping):
            raise ValueError(f"{where}fold result field 'metrics' must be an object, got {metrics!r}.")
        kwargs = {f.name: data[f.name] for f in dataclasses.fields(cls) if data.get(f.name) is not None}
        kwargs["metrics"] = {str(k): float(v) for k, v in (metrics or {}).items() if is_real_scalar(v)}
        try:
            if "cost" in kwargs:
                kwargs["cost"] = FoldCost.from_dict(kwargs["cost"])
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None

    @classmethod
    def from_json_file(cls, path: str | Path, fold_id: int | None = None) -> FoldResult:
        """Read a ``result.json`` or ``error.json``; ``ValueError`` naming the file if it is not one.

        ``fold_id`` is assumed when the file names none (the caller knows which fold's folder it read).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: not valid JSON ({exc}); a fold result file is written whole or not at all, "
                "so this one was not written by lerobot_kfold. Remove it or re-run the fold."
            ) from None
        if fold_id is not None and isinstance(data, dict) and data.get("fold_id") is None:
            data["fold_id"] = fold_id
        return cls.from_dict(data, source=path)


# ---------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True, kw_only=True)
class MetricStats:
    """One metric over the successful folds that report it. Spread fields are None when n == 1."""

    n: int
    mean: float
    std: float | None
    sem: float | None
    ci_low: float | None
    ci_high: float | None
    ci_half_width: float | None
    min: float
    max: float
    # Successful folds without a finite value for this metric (not counted in n).
    missing_fold_ids: list[int] = field(default_factory=list)
    # The Nadeau-Bengio corrected resampled t-interval (see ``comparison``): folds share training
    # episodes, so the plain t-interval above is too narrow. None with one fold or unknown fold sizes.
    corrected_ci_low: float | None = None
    corrected_ci_high: float | None = None
    corrected_ci_half_width: float | None = None


@dataclass(frozen=True, kw_only=True)
class BestFold:
    """The successful fold with the best value of the selection metric (ties: lowest fold_id)."""

    fold_id: int
    repeat: int | None
    index: int | None
    metric: str
    mode: str
    value: float


@dataclass(frozen=True, kw_only=True)
class FailedFold:
    """A fold that did not succeed (or never reported), with the head of its error."""

    fold_id: int
    repeat: int | None
    index: int | None
    error: str
    # The last progress line the fold wrote to its folder (how far it got), when there is one.
    last_progress: str | None = None


@dataclass(frozen=True, kw_only=True)
class FoldRow:
    """One fold's line in the summary: ids, status, finite metrics (None where not finite)."""

    fold_id: int
    repeat: int | None
    index: int | None
    # "ok", "failed", "interrupted", ..., or "missing" for an expected fold that returned nothing.
    status: str
    metrics: dict[str, float | None]
    steps: int | None
    wall_s: float | None
    best_step: int | None
    cost: FoldCost | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True, kw_only=True)
class Totals:
    n_folds: int
    n_succeeded: int
    n_failed: int
    # Expected folds that returned no result at all (counted in n_failed too).
    n_missing: int
    n_repeats: int
    total_wall_s: float


@dataclass(frozen=True, kw_only=True)
class RateInterval:
    """A success rate as counts, with a binomial (Wilson score) interval that stays inside [0, 1]."""

    successes: int
    trials: int
    rate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True, kw_only=True)
class FoldRate(RateInterval):
    fold_id: int


@dataclass(frozen=True, kw_only=True)
class SuccessRates:
    """Closed-loop success over the rollouts themselves: per fold and pooled over folds.

    Beside the metric's between-fold interval (``MetricStats``), which says how much the *recipe* varies
    from one training set to the next; this one says how precisely the rollouts measured the rate.
    """

    method: str
    confidence: float
    pooled: RateInterval
    per_fold: list[FoldRate]


@dataclass(frozen=True, kw_only=True)
class IntervalMethods:
    """What the summary's intervals are, in words and numbers (which one is which)."""

    # MetricStats.ci_*: the plain Student-t interval over folds.
    ci: str
    # MetricStats.corrected_ci_*: the Nadeau-Bengio corrected resampled t-interval.
    corrected_ci: str
    # SuccessRates: the binomial interval over rollouts.
    rate_ci: str
    # J = k x repeats folds, and the mean held-out/training episode ratio of a fold.
    n_splits: int
    test_train_ratio: float | None


@dataclass(frozen=True, kw_only=True)
class PooledRolloutTest:
    """A test on the rollouts pooled over folds (each rollout one trial); a second opinion only.

    ``mcnemar_exact`` when both candidates rolled out from the same seeds in every fold (paired rollouts:
    ``discordant`` = [candidate only succeeded, reference only succeeded]); ``fisher_exact`` otherwise.
    It treats rollouts as independent and ignores how much training runs vary, so it answers "are these
    trained policies different on these starts", not "is this recipe better".
    """

    method: str
    candidate_successes: int
    candidate_trials: int
    reference_successes: int
    reference_trials: int
    discordant: list[int] | None
    p_value: float


@dataclass(frozen=True, kw_only=True)
class PairedComparison:
    """One metric of one candidate against the reference, fold by fold (the same folds and seeds)."""

    metric: str
    candidate: str
    reference: str
    # "min": lower is better; "max": higher is better.
    mode: str
    # Folds where both succeeded and report the metric; differences are candidate - reference.
    fold_ids: list[int]
    differences: list[float]
    mean_difference: float
    # The Nadeau-Bengio corrected resampled t: the interval and p-value the verdict uses.
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    # The plain paired t over folds (scipy's ttest_rel), for reference: optimistic with shared episodes.
    plain_ci_low: float | None
    plain_ci_high: float | None
    plain_p_value: float | None
    # The smallest true difference this run detects with the stated power (corrected test).
    minimum_detectable_difference: float | None
    # "better", "worse" or "no detectable difference" (the candidate, against the reference).
    verdict: str
    pooled_test: PooledRolloutTest | None = None


@dataclass(frozen=True, kw_only=True)
class CorrelationPoint:
    candidate: str
    fold_id: int
    x: float
    y: float


@dataclass(frozen=True, kw_only=True)
class RankCorrelation:
    """Spearman's rank correlation of offline val L1 and closed-loop success over (candidate, fold) points.

    A good offline proxy gives rho near -1 (lower error, higher success). The points share folds and
    candidates, so the p-value is indicative only.
    """

    x: str
    y: str
    n: int
    rho: float | None
    p_value: float | None
    points: list[CorrelationPoint]


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which candidate was chosen, by which stated rule."""

    metric: str
    mode: str
    tie_break: str
    rule: str
    # The candidate with the best mean of the metric.
    leader: str
    # Candidates the leader is not detectably better than (the leader first), in the order given.
    not_detectably_worse: list[str]
    chosen: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class CandidateSummary:
    name: str
    overrides: dict[str, Any]
    summary: CVSummary


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Candidates on the same folds: each one's summary, the paired comparisons and the selection."""

    # The candidate every other one is compared against: the named baseline, else the leader.
    reference: str
    reference_is_baseline: bool
    confidence: float
    # Power at which minimum_detectable_difference is stated.
    power: float
    candidates: list[CandidateSummary]
    comparisons: list[PairedComparison]
    selection: Selection
    warnings: list[str] = field(default_factory=list)

    def candidate(self, name: str) -> CandidateSummary:
        return next(c for c in self.candidates if c.name == name)

    def to_dict(self, *, include_folds: bool = True) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["candidates"] = [
            {
                "name": c.name,
                "overrides": c.overrides,
                "summary": c.summary.to_dict(include_folds=include_folds),
            }
            for c in self.candidates
        ]
        for name in ("comparisons", "selection"):
            value = out[name]
            out[name] = [asdict(v) for v in value] if isinstance(value, list) else asdict(value)
        return out


@dataclass(frozen=True, kw_only=True)
class FinalTest:
    """The chosen candidate refit on every non-hold-out episode, tested once on the hold-out.

    With a hold-out this is the estimate to quote: no choice was made on these episodes or rollout seeds.
    ``model_path`` (a storage path) is the model to ship, whether or not there was a hold-out.
    """

    candidate: str
    n_train_episodes: int
    n_test_episodes: int
    # val_l1 etc. on the hold-out episodes, sim_success_rate on rollout seeds unused in selection.
    metrics: dict[str, float]
    success: RateInterval | None
    sim_seed: int | None
    model_path: str
    result_file: str
    note: str


@dataclass(frozen=True, kw_only=True)
class RunCost:
    """A run's cost over the folds that report one (any status: their time was paid; a crashed fold
    has none)."""

    n_folds: int
    total_wall_s: float
    total_cpu_s: float
    # None when no fold saw a GPU, or none was priced (backend local, the CLI).
    total_gpu_s: float | None
    total_usd: float | None
    # Folds with a dollar estimate, the GPU types they were priced as, the price table's date.
    n_priced: int
    priced_gpus: list[str]
    prices_as_of: str | None

    def describe(self) -> str:
        """One line for people: dollars when folds were priced (backend modal), and the seconds used."""
        used = f"{self.total_wall_s:,.0f} s wall, {self.total_cpu_s:,.0f} CPU-seconds"
        if self.total_gpu_s is not None:
            used += f", {self.total_gpu_s:,.0f} GPU-seconds"
        if self.total_usd is None:
            return f"{self.n_folds} folds: {used}; no GPU price applies (not run on Modal)"
        return (
            f"about ${self.total_usd:,.2f} for {self.n_priced} of {self.n_folds} folds "
            f"({', '.join(self.priced_gpus)} at the prices of {self.prices_as_of}, GPU time only); {used}"
        )


@dataclass(frozen=True, kw_only=True)
class CVSummary:
    """The cross-validation summary: what ``summary.json`` holds and the aggregate task's XCom carries.

    The optional fields at the end are filled by whoever ran the folds (plan hash, dataset, wall time,
    output files) and are left out of :meth:`to_dict` while unknown.
    """

    run_id: str | None
    config: AggregateConfig
    totals: Totals
    # In order: the selection metric first, then the others as the folds first report them.
    metrics: dict[str, MetricStats]
    best_fold: BestFold
    failed_folds: list[FailedFold]
    # One row per fold, missing folds included. Empty when read from the compact XCom form.
    folds: list[FoldRow]
    warnings: list[str]
    plan_hash: str | None = None
    # {"repo_id": ..., "fingerprint": ...} of the dataset the plan was made for.
    dataset: dict[str, Any] | None = None
    wall_s: float | None = None
    run_folder: str | None = None
    # Paths of the written files: summary_json, folds_csv, report_png, report_html.
    outputs: dict[str, str] = field(default_factory=dict)
    # The candidate these numbers are of (in a comparison: the chosen one).
    candidate: str | None = None
    # Binomial intervals of success rates over rollouts ("sim_success_rate"), beside the fold intervals.
    success_rates: dict[str, SuccessRates] = field(default_factory=dict)
    intervals: IntervalMethods | None = None
    # Offline val L1 against closed-loop success, over every (candidate, fold) point.
    correlation: RankCorrelation | None = None
    # Several candidates: each one's summary, the paired comparisons, the selection.
    comparison: Comparison | None = None
    # The chosen candidate refit and tested once (``refit``).
    final_test: FinalTest | None = None
    # What the folds cost (None when no fold reports a cost, e.g. results of older runs).
    cost: RunCost | None = None

    def to_dict(self, *, include_folds: bool = True) -> dict[str, Any]:
        """The JSON form (``summary.json``); passes ``json.dumps(allow_nan=False)``.

        ``include_folds=False`` leaves out the per-fold rows: the compact form for XCom.
        """
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "config": {**asdict(self.config), "selection_mode": self.config.selection_mode},
            "totals": asdict(self.totals),
            "metrics": {name: asdict(stats) for name, stats in self.metrics.items()},
            "best_fold": asdict(self.best_fold),
            "failed_folds": [asdict(f) for f in self.failed_folds],
            "folds": [asdict(row) for row in self.folds],
            "warnings": list(self.warnings),
        }
        if not include_folds:
            del out["folds"]
        for name in ("plan_hash", "dataset", "wall_s", "run_folder"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.outputs:
            out["outputs"] = dict(self.outputs)
        out.update(self._selection_parts(include_folds))
        if self.cost is not None:
            out["cost"] = asdict(self.cost)
        return json_safe(out)

    def _selection_parts(self, include_folds: bool) -> dict[str, Any]:
        """The statistics added for comparing candidates, each only when there is one."""
        out: dict[str, Any] = {}
        if self.candidate is not None:
            out["candidate"] = self.candidate
        if self.success_rates:
            out["success_rates"] = {name: asdict(rates) for name, rates in self.success_rates.items()}
        for name in ("intervals", "correlation", "final_test"):
            if getattr(self, name) is not None:
                out[name] = asdict(getattr(self, name))
        if self.comparison is not None:
            out["comparison"] = self.comparison.to_dict(include_folds=include_folds)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> CVSummary:
        """Read ``summary.json`` or the aggregate task's XCom; ``ValueError`` naming what is wrong."""

        where = f"{source}: " if source is not None else ""
        data = _mapping(data, "a k-fold summary", where)
        try:
            return cls(
                run_id=data.get("run_id"),
                config=_aggregate_config(_mapping(_required(data, "config", where), "'config'", where)),
                totals=_build(Totals, _required(data, "totals", where), where),
                metrics={
                    str(name): _build(MetricStats, stats, where)
                    for name, stats in _mapping(_required(data, "metrics", where), "'metrics'", where).items()
                },
                best_fold=_build(BestFold, _required(data, "best_fold", where), where),
                failed_folds=[_build(FailedFold, f, where) for f in data.get("failed_folds") or []],
                folds=[_fold_row(row, where) for row in data.get("folds") or []],
                warnings=[str(w) for w in data.get("warnings") or []],
                plan_hash=data.get("plan_hash"),
                dataset=data.get("dataset"),
                wall_s=data.get("wall_s"),
                run_folder=data.get("run_folder"),
                outputs=dict(data.get("outputs") or {}),
                cost=None if data.get("cost") is None else _build(RunCost, data["cost"], where),
                **_selection_parts(data, where),
            )
        except TypeError as exc:
            raise ValueError(f"{where}not a k-fold summary: {exc}") from None


def _selection_parts(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The optional comparison fields of a summary dict, typed (absent in older summaries)."""
    hints = typing.get_type_hints(CVSummary, localns={"AggregateConfig": object})
    names = ("candidate", "success_rates", "intervals", "correlation", "comparison", "final_test")
    return {name: _typed(hints[name], data[name], where) for name in names if data.get(name) is not None}


def _typed(hint: Any, value: Any, where: str) -> Any:
    """``value`` (from JSON) as ``hint`` says: dataclasses, lists and dicts of them, optionals."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is CVSummary:
        return CVSummary.from_dict(value)
    if dataclasses.is_dataclass(hint):
        data = _mapping(value, f"a {hint.__name__} entry", where)
        hints = typing.get_type_hints(hint, localns={"AggregateConfig": object})
        fields = [f for f in dataclasses.fields(hint) if f.name in data]
        return _build(hint, {f.name: _typed(hints[f.name], data[f.name], where) for f in fields}, where)
    if origin is list:
        return [_typed(args[0], v, where) for v in value]
    if origin is dict:
        return {str(k): _typed(args[1], v, where) for k, v in _mapping(value, "an object", where).items()}
    if origin in (types.UnionType, typing.Union):
        return None if value is None else _typed(next(a for a in args if a is not type(None)), value, where)
    return value


def _mapping(value: Any, what: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}{what} must be a JSON object, got {type(value).__name__}.")
    return value


def _required(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ValueError(
            f"{where}not a k-fold summary: no {key!r}. Point at a summary.json written by lerobot_kfold."
        )
    return data[key]


def _fold_row(data: Any, where: str) -> FoldRow:
    row = _build(FoldRow, data, where)
    if row.cost is None:
        return row
    try:
        return dataclasses.replace(row, cost=FoldCost.from_dict(row.cost))
    except ValueError as exc:
        raise ValueError(f"{where}fold {row.fold_id}: {exc}") from None


def _build(cls: type, data: Any, where: str) -> Any:
    """A summary part from its dict: fields of ``cls`` without a default required, unknown keys ignored."""
    data = _mapping(data, f"a {cls.__name__} entry", where)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [n for n in required if n not in data]
    if missing:
        raise ValueError(f"{where}a {cls.__name__} entry has no {', '.join(map(repr, missing))}.")
    return cls(**{n: data[n] for n in names if n in data})


def _aggregate_config(data: Mapping[str, Any]) -> AggregateConfig:
    """The summary's aggregation settings; ``selection_mode`` is derived from the metric, not stored."""
    from lerobot_kfold.aggregate import AggregateConfig

    return AggregateConfig(**{key: value for key, value in data.items() if key != "selection_mode"})
