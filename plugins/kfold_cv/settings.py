"""``CVSettings``: every setting of one k-fold run, flat, validated before anything is paid for.

Flat and scalar on purpose: the same names are the DAG's Params (the UI trigger form cannot edit nested
objects), a task group's keyword arguments, and the keys of the validated settings in XCom. Validation
builds the library's own configs (SplitConfig, TrainingParams, AggregateConfig), so the rules live in
one place, and every message says how to fix the input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lerobot_kfold.training_config import DEMO_ACT_OVERRIDES, WANDB_MODES, FoldTrainingConfig

if TYPE_CHECKING:  # imported where used: DAG files import this module, and parsing must stay fast
    from lerobot_kfold.aggregate import AggregateConfig
    from lerobot_kfold.runner import TrainingParams
    from lerobot_kfold.splits import SplitConfig

BACKENDS = ("local", "modal")
# GPU types Modal accepts in `gpu=` (modal.com/docs/guide/gpu).
GPU_TYPES = ("T4", "L4", "A10G", "L40S", "A100", "A100-80GB", "H100", "H200", "B200")
POLICY_TYPES = ("act",)
# "small": the small ACT that learns the simulator demo in CPU minutes; "lerobot": lerobot's defaults.
POLICY_PRESETS = {"small": DEMO_ACT_OVERRIDES, "lerobot": {}}
SELECTION_METRICS = {"val_l1": "min", "best_val_l1": "min", "sim_success_rate": "max"}


@dataclass
class CVSettings:
    """One k-fold run. Defaults: the local demo (5 folds of the small ACT on the simulator dataset)."""

    # Dataset: a LeRobot dataset folder (relative paths are under the storage root, e.g. on the Modal
    # Volume), or a hub repo id fetched once into storage. At least one of the two.
    dataset_root: str = "datasets/so101_demo"
    dataset_repo_id: str = ""
    # Fold planning over episodes (never frames).
    k: int = 5
    seed: int = 0
    stratify_by_task: bool = False
    # Share of episodes held out of every fold (a final test set), 0 for none.
    holdout_fraction: float = 0.0
    # Repeated k-fold: each repeat reshuffles the episodes.
    repeats: int = 1
    # Training of every fold.
    policy_type: str = "act"
    policy_preset: str = "small"
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-3
    chunk_size: int = 10
    eval_every: int = 500
    save_every: int = 500
    # Closed-loop evaluation episodes in the simulator per fold (demo dataset only), 0 to skip.
    sim_eval_episodes: int = 0
    wandb_mode: str = "disabled"
    # Where the folds run: "local" (this Airflow worker) or "modal" (one Modal GPU per fold).
    backend: str = "local"
    gpu: str = "L4"
    # Seconds one fold may run on Modal before Modal stops it.
    timeout_s: int = 4 * 3600
    # Aggregation: 0 means every fold must succeed.
    min_successful_folds: int = 0
    selection_metric: str = "val_l1"

    def __post_init__(self) -> None:
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("gpu", self.gpu, GPU_TYPES)
        _check_choice("policy_type", self.policy_type, POLICY_TYPES)
        _check_choice("policy_preset", self.policy_preset, tuple(POLICY_PRESETS))
        _check_choice("wandb_mode", self.wandb_mode, WANDB_MODES)
        _check_choice("selection_metric", self.selection_metric, tuple(SELECTION_METRICS))
        if not self.dataset_root.strip() and not self.dataset_repo_id.strip():
            raise ValueError(
                "set dataset_root (a LeRobot dataset folder) or dataset_repo_id (a hub id like 'owner/name')"
            )
        if self.timeout_s < 60:
            raise ValueError(f"timeout_s must be at least 60 seconds, got {self.timeout_s}")
        if self.min_successful_folds < 0:
            raise ValueError(
                f"min_successful_folds must be >= 0 (0: every fold), got {self.min_successful_folds}"
            )
        if self.sim_eval_episodes and self.policy_type != "act":
            raise ValueError("sim_eval_episodes needs the simulator demo dataset and an ACT policy")
        split = self.split_config()
        if self.min_successful_folds > split.num_folds:
            raise ValueError(
                f"min_successful_folds={self.min_successful_folds} exceeds the {split.num_folds} folds "
                f"(k={self.k} x repeats={self.repeats}); lower it or add folds"
            )
        # The training numbers, checked by the library's own config (cheap: no lerobot import). The
        # policy itself is checked by check(), in the validate task: importing lerobot takes seconds,
        # and DAG files build settings at every parse.
        FoldTrainingConfig(
            dataset_root=".", train_episodes=[0], val_episodes=[1], output_dir=".", **self._training_values()
        )

    def check(self) -> None:
        """The checks that need the training stack (lerobot's policy config): run before any GPU is paid."""
        self.training_params()
        self.aggregate_config()

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> CVSettings:
        """Build from Params or a conf: unknown names fail, types are coerced (forms send strings)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known settings: {sorted(fields)}")
        coerced = {name: _coerce(name, value, type(getattr(cls, name))) for name, value in values.items()}
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def split_config(self) -> SplitConfig:
        from lerobot_kfold.splits import SplitConfig

        return SplitConfig(
            k=self.k,
            seed=self.seed,
            stratify_by_task=self.stratify_by_task,
            holdout_fraction=self.holdout_fraction,
            repeats=self.repeats,
        )

    def training_params(self, torch_threads: int | None = None, check_policy: bool = True) -> TrainingParams:
        """The library's training parameters; ``check_policy=False`` skips lerobot's policy check
        (seconds of imports) where ``check()`` already ran it."""
        from lerobot_kfold.runner import TrainingParams

        return TrainingParams(
            policy_overrides=dict(POLICY_PRESETS[self.policy_preset]),
            torch_threads=torch_threads,
            check_policy=check_policy,
            **self._training_values(),
        )

    def _training_values(self) -> dict[str, Any]:
        """The settings that are FoldTrainingConfig fields of the same name."""
        names = (
            "policy_type",
            "steps",
            "batch_size",
            "learning_rate",
            "chunk_size",
            "eval_every",
            "save_every",
            "seed",
            "sim_eval_episodes",
            "wandb_mode",
        )
        return {name: getattr(self, name) for name in names}

    def aggregate_config(self) -> AggregateConfig:
        from lerobot_kfold.aggregate import AggregateConfig

        return AggregateConfig(
            selection_metric=self.selection_metric,
            selection_mode=SELECTION_METRICS[self.selection_metric],  # type: ignore[arg-type]
            min_successful_folds=self.min_successful_folds or None,
        )


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0"}:
            return value.strip().lower() in {"true", "1"}
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if value is None:
        return ""
    return str(value).strip()
