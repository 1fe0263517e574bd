"""``CVSettings``: the library's run settings plus where the folds run, flat and validated up front.

Flat and scalar on purpose: the same names are the DAG's Params (the UI trigger form cannot edit nested
objects), a task group's ``settings=`` constants, and the keys of the validated settings in XCom. The
run settings are declared in the library (``lerobot_kfold.run_settings``); the compute settings, which
only the Airflow side knows, are declared here the same way. Every message says how to fix the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lerobot_kfold.declared import check_declared, setting
from lerobot_kfold.run_settings import GROUPS, RunSettings, build_groups, flatten, setting_names
from lerobot_kfold.splits import MAX_MAP_LENGTH

BACKENDS = ("local", "modal")
# GPU types Modal accepts in `gpu=` (modal.com/docs/guide/gpu).
GPU_TYPES = ("T4", "L4", "A10G", "L40S", "A100", "A100-80GB", "H100", "H200", "B200")


@dataclass(frozen=True)
class ComputeSettings:
    """Where the folds of a run train."""

    backend: str = setting(
        "local",
        "'local': folds train in the Airflow worker; 'modal': one Modal GPU per fold.",
        choices=BACKENDS,
    )
    gpu: str = setting("L4", "Modal GPU type per fold (backend modal).", choices=GPU_TYPES)
    # Modal stops a call that runs longer; a fold resumes from its last checkpoint on retry.
    timeout_s: int = setting(4 * 3600, "Seconds one fold may run on Modal.", minimum=60, maximum=24 * 3600)
    # Within the deployment's hard cap (the task group's max_parallel_folds): a larger value fails validate.
    max_parallel_folds: int = setting(
        0,
        "Folds of this run that train at once; 0: as many as the deployment allows (its hard cap).",
        minimum=0,
        maximum=MAX_MAP_LENGTH,
    )
    # Checked in validate against the worst case: fold calls x timeout_s x the GPU's price per second.
    max_cost_usd: float = setting(
        0.0,
        "Refuse the run (before any GPU starts) when its worst-case GPU cost, fold calls (folds x "
        "candidates, plus the refit) x timeout_s x the GPU's price, is above this many US dollars; 0: no "
        "cap (backend modal).",
        minimum=0,
        maximum=1e9,
    )
    # A known pace (an earlier run's report shows steps/s per fold) gives validate an estimate from steps.
    expected_steps_per_s: float = setting(
        0.0,
        "Training steps per second one fold reaches on this GPU, e.g. from an earlier run's report; 0: "
        "unknown. Lets validate estimate the cost from steps.",
        minimum=0,
        maximum=1e6,
    )
    # Reported in the fold's log, never acted on: a fold may be slow rather than stuck.
    stall_after_s: int = setting(
        1800,
        "Report a fold in its log as stalled when its progress has not moved for this many seconds (it "
        "keeps running); 0: never.",
        minimum=0,
        maximum=7 * 24 * 3600,
    )

    def __post_init__(self) -> None:
        check_declared(self)


# Every group of a k-fold run on Airflow: the library's, then the compute settings.
CV_GROUPS = {**GROUPS, "compute": (ComputeSettings, "Compute")}
SETTING_NAMES = tuple(setting_names(CV_GROUPS))


@dataclass(frozen=True)
class CVSettings:
    """One k-fold run on Airflow: ``run`` (the library's settings) and ``compute``."""

    run: RunSettings
    compute: ComputeSettings

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CVSettings:
        """From Params or a conf (typed values): unknown names fail, every rule is applied."""
        groups = build_groups(CV_GROUPS, values)
        compute = groups.pop("compute")
        return cls(run=RunSettings(**groups), compute=compute)

    def to_dict(self) -> dict[str, Any]:
        return {**self.run.to_dict(), **flatten({"compute": self.compute})}

    def check(self) -> None:
        """The checks that need the training stack (lerobot's policy config): before any GPU is paid."""
        self.run.check_policy()


def settings_from_environment(prefix: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given as ``<prefix><NAME>`` environment variables (text, parsed as the CLI parses it).

    For DAGs whose settings are deployment constants (the retrain DAGs): any setting, one variable each.
    """
    import os

    from lerobot_kfold.declared import declared, parse_text

    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for cls, _ in CV_GROUPS.values():
        for name, (_, spec) in declared(cls).items():
            variable = f"{prefix}{name.upper()}"
            if variable in environ:
                values[name] = parse_text(variable, environ[variable], spec)
    return values
