"""Configuration of one fold's training run.

A plain dataclass that validates itself, so bad input fails with a message before any data is read or
GPU time is paid for. It is JSON-serializable (``to_dict``/``from_dict``) because the same config
travels through Airflow XCom and Modal function arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

WandbMode = Literal["disabled", "offline", "online"]
WANDB_MODES = ("disabled", "offline", "online")
DEVICES = ("auto", "cpu", "cuda", "mps")

# A small state-only ACT that learns the simulator demo in a few CPU minutes. lerobot's defaults (VAE on,
# dropout 0.1, dim_model 512) stayed at 0-5% success after minutes of CPU training on the demo data;
# with these settings (and chunk size 10, batch 64, lr 1e-3) one fold reached 35-55% after ~4,500 steps.
DEMO_ACT_OVERRIDES: dict[str, Any] = {
    "dim_model": 64,
    "n_encoder_layers": 1,
    "n_decoder_layers": 1,
    "use_vae": False,
    "dropout": 0.0,
}


@dataclass
class FoldTrainingConfig:
    """Everything one fold's training needs. Paths are plain strings or Paths; all else is scalar."""

    # Folder of a local LeRobot v3 dataset (contains meta/info.json).
    dataset_root: str
    # Episodes to train on and to validate on. They must be disjoint.
    train_episodes: list[int]
    val_episodes: list[int]
    # Where this fold writes checkpoints, metrics and its result. Re-running on the same folder resumes.
    output_dir: str
    # Identifier of the dataset (metadata only; nothing is downloaded).
    repo_id: str = "local/dataset"
    # Fold number within the plan, for names and logs; its repeat and position within the repeat.
    fold_id: int = 0
    repeat: int = 0
    fold_index: int = 0
    # lerobot policy type ("act"; others as lerobot registers them).
    policy_type: str = "act"
    # Extra fields of the lerobot policy config, e.g. {"dim_model": 64}.
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    # Optimisation steps, batch size and learning rate (the policy's optimizer preset, with this lr).
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-3
    # Actions predicted per model call (ACT chunk size); also the number executed per call in rollouts.
    chunk_size: int = 10
    # Validate on the held-out episodes every this many steps (and always at the end).
    eval_every: int = 500
    # Write a resumable checkpoint every this many steps (and always at the end).
    save_every: int = 500
    # Seed for weights, data order and dropout. Same seed, same data: same result.
    seed: int = 0
    # "auto" takes CUDA when available, else CPU.
    device: str = "auto"
    # torch threads for this process (None: torch's default). Set 1 when folds run in parallel.
    torch_threads: int | None = None
    # DataLoader workers. 0 is fastest for small state-only data (no inter-process copies).
    num_workers: int = 0
    # Load a dataset without camera features into memory once (identical items, no per-item parquet reads).
    preload: bool = True
    # Closed-loop evaluation in the simulator after training (0 = off). Only for datasets recorded from it.
    sim_eval_episodes: int = 0
    # Step limit of one evaluation rollout.
    sim_eval_max_steps: int = 200
    # Seed of the evaluation rollouts (seeds never used in recording are derived from it).
    sim_eval_seed: int = 0
    # Weights & Biases: "disabled" (default), "offline" or "online". The API key comes from the
    # environment (WANDB_API_KEY) or a Modal secret, never from this config.
    wandb_mode: str = "disabled"
    wandb_project: str = "lerobot-kfold"
    # Groups the folds of one k-fold run in W&B and names the run's outputs.
    run_id: str | None = None
    # Stop (after checkpointing) once this step is reached, as a preemption would. For tests and drills.
    stop_at_step: int | None = None

    def __post_init__(self) -> None:
        self.dataset_root = str(self.dataset_root)
        self.output_dir = str(self.output_dir)
        self.train_episodes = [int(e) for e in self.train_episodes]
        self.val_episodes = [int(e) for e in self.val_episodes]
        self._validate()

    def _validate(self) -> None:
        if not self.train_episodes:
            raise ValueError("train_episodes is empty: a fold needs at least one training episode.")
        if not self.val_episodes:
            raise ValueError("val_episodes is empty: a fold needs at least one held-out episode.")
        overlap = sorted(set(self.train_episodes) & set(self.val_episodes))
        if overlap:
            raise ValueError(
                f"episodes {overlap[:10]} are in both train_episodes and val_episodes; that would leak "
                "the validation data into training. Plan folds with lerobot_kfold.splits."
            )
        for name in ("steps", "batch_size", "chunk_size", "eval_every", "save_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}.")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}.")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {self.torch_threads!r}.")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers!r}.")
        if self.sim_eval_episodes < 0 or self.sim_eval_max_steps < 1:
            raise ValueError("sim_eval_episodes must be >= 0 and sim_eval_max_steps >= 1.")
        if self.wandb_mode not in WANDB_MODES:
            raise ValueError(f"wandb_mode must be one of {WANDB_MODES}, got {self.wandb_mode!r}.")
        if self.stop_at_step is not None and not 1 <= self.stop_at_step <= self.steps:
            raise ValueError(f"stop_at_step must be in [1, steps={self.steps}], got {self.stop_at_step}.")
        forbidden = {"device", "push_to_hub", "chunk_size", "optimizer_lr"} & set(self.policy_overrides)
        if forbidden:
            raise ValueError(
                f"policy_overrides may not set {sorted(forbidden)}: use the config fields of the same "
                "meaning (device, chunk_size, learning_rate); push_to_hub is always off."
            )

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldTrainingConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fold training option(s) {unknown}; known options: {sorted(known)}.")
        return cls(**data)

    def resume_key(self) -> dict[str, Any]:
        """The settings a checkpoint must match to be resumed (everything that changes the result)."""
        data = self.to_dict()
        # Names and logging settings do not change what is trained.
        for name in ("run_id", "wandb_project", "repeat", "fold_index"):
            data.pop(name)
        for volatile in (
            "output_dir",
            "torch_threads",
            "num_workers",
            "preload",
            "stop_at_step",
            "wandb_mode",
        ):
            data.pop(volatile)
        data.pop("sim_eval_episodes")
        data.pop("sim_eval_max_steps")
        data.pop("sim_eval_seed")
        return data
