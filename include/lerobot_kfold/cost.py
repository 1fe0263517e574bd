"""What a fold costs: where it ran, its GPU- and CPU-seconds, and dollars from a dated price table.

Why here, in the library: the numbers are measured where the fold runs (the container's own view of its
GPUs, its own clock and CPU time), so the CLI, the Airflow worker and a Modal container report them the
same way. Dollars are an *estimate*: wall seconds of the call that finished the fold times the per-second
price of the GPU type that was requested (Modal bills the requested type, and may place a request on a
faster card). The table holds Modal's base GPU rates; Modal also bills the container's CPU and memory
(small next to a GPU) and multiplies rates for region pinning or non-preemptible runs: none of that is
included. A deployment with other rates overrides the table with ``LEROBOT_KFOLD_GPU_PRICES`` (JSON
``{"as_of": "YYYY-MM-DD", "H100": 0.0011, ...}``, USD per GPU-second), read where the run is validated.

Before any spend the orchestrator asks :func:`worst_case` (every fold call running to its timeout) and,
when a throughput is known, :func:`estimate_from_steps`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from lerobot_kfold.results import FoldCost

# When the default prices were taken, and from where: modal.com/pricing base rates (USD per GPU-second).
# T4, L4, L40S, A100-80GB and H100 were checked against a listing verified on 2026-05-07.
PRICES_AS_OF = "2026-05-07"
GPU_PRICES_PER_S: dict[str, float] = {
    "T4": 0.000164,
    "L4": 0.000222,
    "A10G": 0.000306,
    "L40S": 0.000542,
    "A100": 0.000583,
    "A100-80GB": 0.000694,
    "H100": 0.001097,
    "H200": 0.001261,
    "B200": 0.001736,
}
PRICES_ENV = "LEROBOT_KFOLD_GPU_PRICES"
_AS_OF_KEY = "as_of"


@dataclass(frozen=True)
class PriceTable:
    """USD per GPU-second by Modal GPU type, and the date the prices are from."""

    per_s: dict[str, float]
    as_of: str

    def price(self, gpu: str, count: int = 1) -> GpuPrice:
        """The price of ``count`` GPUs of type ``gpu``; ``ValueError`` naming the fix when it is unknown."""
        if gpu not in self.per_s:
            raise ValueError(
                f"no price for GPU type {gpu!r} (prices of {self.as_of} know {sorted(self.per_s)}): add "
                f"it to {PRICES_ENV} as USD per GPU-second, or choose another gpu"
            )
        return GpuPrice(gpu=gpu, count=count, usd_per_s=self.per_s[gpu], as_of=self.as_of)


def price_table(environ: Mapping[str, str] | None = None) -> PriceTable:
    """The default prices, with the deployment's ``LEROBOT_KFOLD_GPU_PRICES`` over them."""
    environ = os.environ if environ is None else environ
    text = environ.get(PRICES_ENV, "").strip()
    if not text:
        return PriceTable(dict(GPU_PRICES_PER_S), PRICES_AS_OF)
    try:
        override = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{PRICES_ENV} must be a JSON object of USD per GPU-second: {exc}") from None
    if not isinstance(override, dict):
        raise ValueError(
            f'{PRICES_ENV} must be a JSON object such as {{"as_of": "2026-06-01", "H100": 0.0011}}'
        )
    as_of = str(override.pop(_AS_OF_KEY, f"{PRICES_ENV} (undated)"))
    for gpu, value in override.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"{PRICES_ENV}: the price of {gpu!r} must be a number >= 0 (USD per second)")
    return PriceTable({**GPU_PRICES_PER_S, **{str(k): float(v) for k, v in override.items()}}, as_of)


@dataclass(frozen=True)
class GpuPrice:
    """What one fold call is billed per second: ``count`` GPUs of type ``gpu`` at ``usd_per_s`` each."""

    gpu: str
    count: int
    usd_per_s: float
    as_of: str

    @property
    def call_usd_per_s(self) -> float:
        return self.usd_per_s * self.count

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuPrice:
        return cls(
            gpu=str(data["gpu"]),
            count=int(data["count"]),
            usd_per_s=float(data["usd_per_s"]),
            as_of=str(data["as_of"]),
        )

    def describe(self) -> str:
        count = f"{self.count} x " if self.count != 1 else ""
        return f"{count}{self.gpu} at ${self.usd_per_s:.6f}/s (prices of {self.as_of})"


# ------------------------------------------------------------------------------------ before the run


@dataclass(frozen=True)
class RunEstimate:
    """The cost of a run before it starts: the worst case and, when known, an estimate from steps."""

    fold_calls: int
    timeout_s: int
    price: GpuPrice
    worst_case_usd: float
    # Seconds one fold trains for, and the run's dollars at that pace (None: no throughput known).
    seconds_per_fold: float | None = None
    estimate_usd: float | None = None

    def describe(self) -> str:
        text = (
            f"worst case ${self.worst_case_usd:,.2f} = {self.fold_calls} fold calls x timeout_s "
            f"{self.timeout_s} s x {self.price.describe()}"
        )
        if self.estimate_usd is not None and self.seconds_per_fold is not None:
            text += (
                f"; estimate from steps ${self.estimate_usd:,.2f} ({self.seconds_per_fold:,.0f} s of "
                "training per fold, start-up and evaluation not included)"
            )
        return text


def worst_case(folds: int, candidates: int, timeout_s: int, price: GpuPrice) -> float:
    """Dollars if every fold call of every candidate ran until its timeout (retries not counted)."""
    return folds * candidates * timeout_s * price.call_usd_per_s


def estimate_from_steps(steps: int, steps_per_s: float, fold_calls: int, price: GpuPrice) -> float:
    """Dollars of ``fold_calls`` folds of ``steps`` steps at a known ``steps_per_s``."""
    return fold_calls * (steps / steps_per_s) * price.call_usd_per_s


def estimate_run(
    folds: int,
    candidates: int,
    timeout_s: int,
    price: GpuPrice,
    steps: int,
    steps_per_s: float | None,
    extra_calls: int = 0,
) -> RunEstimate:
    """The worst case, and the estimate from steps when ``steps_per_s`` is known (> 0).

    ``extra_calls`` are fold calls beyond folds x candidates (a refit of the chosen candidate). With
    candidates of different ``steps``, pass the largest: the estimate then errs on the high side.
    """
    calls = folds * candidates + extra_calls
    known = steps_per_s is not None and steps_per_s > 0
    return RunEstimate(
        fold_calls=calls,
        timeout_s=timeout_s,
        price=price,
        worst_case_usd=calls * timeout_s * price.call_usd_per_s,
        seconds_per_fold=steps / steps_per_s if known else None,
        estimate_usd=estimate_from_steps(steps, steps_per_s, calls, price) if known else None,
    )


# --------------------------------------------------------------------------------- where the fold runs


@dataclass
class UsageMeter:
    """Wall and CPU time of one call, from its start (``time.perf_counter``, ``time.process_time``)."""

    wall_started: float
    cpu_started: float

    @classmethod
    def start(cls) -> UsageMeter:
        return cls(time.perf_counter(), time.process_time())

    def wall_s(self) -> float:
        return time.perf_counter() - self.wall_started

    def cpu_s(self) -> float:
        return time.process_time() - self.cpu_started


def accelerators_here() -> tuple[str | None, int]:
    """The GPU model and count this process sees (``("NVIDIA H100 80GB HBM3", 1)``), or ``(None, 0)``."""
    import torch

    if not torch.cuda.is_available():
        return None, 0
    return torch.cuda.get_device_name(0), torch.cuda.device_count()


def cpu_cores_here() -> int:
    """CPU cores this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS has no sched_getaffinity
        return os.cpu_count() or 1


def fold_cost(meter: UsageMeter, device: str, price: GpuPrice | None) -> FoldCost:
    """The cost record of the call ``meter`` has timed, on this machine, priced at ``price`` (or not)."""
    wall = round(meter.wall_s(), 3)
    accelerator, count = accelerators_here() if device == "cuda" else (None, 0)
    return FoldCost(
        device=device,
        accelerator=accelerator,
        accelerator_count=count,
        cpu_cores=cpu_cores_here(),
        wall_s=wall,
        cpu_s=round(meter.cpu_s(), 3),
        gpu_s=round(wall * count, 3) if count else None,
        priced_gpu=None if price is None else price.gpu,
        usd_per_s=None if price is None else price.call_usd_per_s,
        usd=None if price is None else round(wall * price.call_usd_per_s, 6),
        prices_as_of=None if price is None else price.as_of,
    )
