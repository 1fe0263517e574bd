"""How folds train and are evaluated (declared run settings), and the configuration of one fold.

``TrainingSettings`` and ``EvaluationSettings`` are declared settings (see ``declared``): the CLI options,
the trigger form's fields and their validation come from these fields. ``FoldTrainingConfig`` is what
one fold's training needs: the same settings plus the fold's episodes, folders and execution knobs. It is
JSON-serializable (``to_dict``/``from_dict``) because it travels through Airflow XCom and Modal calls.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lerobot_kfold.declared import check_declared, setting

MAX_STEPS = 10_000_000
WANDB_MODES = ("disabled", "offline", "online")
DEVICES = ("auto", "cpu", "cuda", "mps")
POLICY_TYPES = ("act",)
MIXED_PRECISION = ("no", "bf16")

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
# Named starting points for the policy config; policy_overrides apply on top.
POLICY_PRESETS: dict[str, dict[str, Any]] = {"small": DEMO_ACT_OVERRIDES, "lerobot": {}}
# Policy config fields with a setting of their own (or none: push_to_hub is always off).
_OWNED_POLICY_FIELDS = {
    "device": "device",
    "push_to_hub": "(always off)",
    "chunk_size": "chunk_size",
    "n_action_steps": "chunk_size",
    "optimizer_lr": "learning_rate",
}


@dataclass
class TrainingSettings:
    """How every fold of a run trains."""

    # lerobot policy type; the policy's config is lerobot's, with the preset and overrides applied.
    policy_type: str = setting("act", "lerobot policy to train.", choices=POLICY_TYPES)
    # lerobot's config by default, as `lerobot-train --policy.type=act` builds it; the demos choose 'small'.
    policy_preset: str = setting(
        "lerobot",
        "Starting policy config: 'lerobot' is lerobot's default (lerobot-train --policy.type=act); "
        "'small' is a tiny state-only ACT that learns the simulator demo in CPU minutes.",
        choices=tuple(POLICY_PRESETS),
    )
    # Extra lerobot policy config fields, e.g. {"dim_model": 64}; checked against the policy's config.
    policy_overrides: dict[str, Any] = setting(
        {}, "JSON object of lerobot policy config fields applied over the preset."
    )
    # lerobot's ACT loads torchvision's ImageNet ResNet-18 for camera datasets (downloaded once into the
    # torch cache; baked into the Modal image). Off: the backbone trains from scratch, nothing to fetch.
    pretrained_backbone: bool = setting(
        True,
        "Start the vision backbone from lerobot's pretrained weights (ImageNet ResNet-18 for ACT; camera "
        "datasets only); false trains it from scratch.",
    )
    steps: int = setting(2000, "Training steps per fold.", minimum=1, maximum=MAX_STEPS)
    batch_size: int = setting(64, "Training batch size.", minimum=1, maximum=4096)
    # The policy's optimizer preset, with this learning rate.
    learning_rate: float = setting(1e-3, "Learning rate.", above=0, maximum=1)
    # Actions predicted per model call (ACT chunk size); also the number executed per call in rollouts.
    chunk_size: int = setting(10, "Action chunk length.", minimum=1, maximum=1000)
    # A resumable checkpoint every this many steps, and always at the end.
    save_every: int = setting(500, "Checkpoint every N steps (resume point).", minimum=1, maximum=MAX_STEPS)
    # "auto" takes CUDA when available, else CPU.
    device: str = setting("auto", "Torch device of a fold.", choices=DEVICES)
    # accelerate's mixed precision: the forward pass and loss in bfloat16, weights and optimizer in float32.
    mixed_precision: str = setting(
        "no",
        "Mixed precision of training: 'bf16' autocasts to bfloat16; 'no' is float32.",
        choices=MIXED_PRECISION,
    )
    # Decoded video frames of a fold (uint8) are kept in memory up to this budget, else in a memory-mapped
    # file on local disk; where that disk is too small, lerobot's per-item decoding with DataLoader workers.
    frame_cache_gb: float = setting(
        8.0,
        "Memory budget (GiB) of a fold's decoded camera frames; above it they go to a memory-mapped file "
        "on local disk (0: always on disk).",
        minimum=0,
        maximum=4096,
    )
    # The API key comes from the environment, an Airflow connection or a Modal secret, never from here.
    wandb_mode: str = setting("disabled", "Weights & Biases logging.", choices=WANDB_MODES)
    wandb_project: str = setting(
        "lerobot-kfold",
        "W&B project of the folds.",
        pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        pattern_hint="a W&B project name (letters, digits, '_', '.', '-'; at most 128)",
    )

    def __post_init__(self) -> None:
        check_declared(self)
        self._check_training()

    def _check_training(self) -> None:
        owned = sorted(set(self.policy_overrides) & set(_OWNED_POLICY_FIELDS))
        if owned:
            instead = ", ".join(f"{name} -> {_OWNED_POLICY_FIELDS[name]}" for name in owned)
            raise ValueError(
                f"policy_overrides may not set {owned}: these have settings of their own ({instead})."
            )
        weights = self.policy_overrides.get("pretrained_backbone_weights")
        if not self.pretrained_backbone and weights:
            raise ValueError(
                "pretrained_backbone is false but policy_overrides sets pretrained_backbone_weights="
                f"{weights!r}: set pretrained_backbone true to load those weights, or drop the override."
            )

    def policy_fields(self) -> dict[str, Any]:
        """The lerobot policy config fields this run sets: the preset, then the overrides."""
        return {**POLICY_PRESETS[self.policy_preset], **self.policy_overrides}

    def check_policy(self) -> None:
        """Check the policy type and its fields against lerobot (imports lerobot: seconds)."""
        from lerobot_kfold.policy_config import make_policy_config

        make_policy_config(self, "cpu")


@dataclass
class EvaluationSettings:
    """How every fold is evaluated: validation on its held-out episodes, rollouts in the simulator."""

    # Validation always runs at the last step too.
    eval_every: int = setting(
        500, "Validate on the held-out episodes every N steps.", minimum=1, maximum=MAX_STEPS
    )
    # Only for datasets recorded from the simulator (the demo recorder marks them).
    sim_eval_episodes: int = setting(
        0,
        "Closed-loop episodes in the simulator per fold (simulator datasets only; 0: none).",
        minimum=0,
        maximum=1000,
    )
    sim_eval_max_steps: int = setting(200, "Step limit of one rollout.", minimum=1, maximum=100_000)

    def __post_init__(self) -> None:
        check_declared(self)


@dataclass(kw_only=True)
class FoldTrainingConfig(TrainingSettings, EvaluationSettings):
    """Everything one fold's training needs: the run's settings plus the fold itself."""

    # Folder of a local LeRobot v3 dataset (contains meta/info.json).
    dataset_root: str
    # Episodes to train on and to validate on. They must be disjoint.
    train_episodes: list[int]
    val_episodes: list[int]
    # Where this fold writes checkpoints, metrics and its result. Re-running on the same folder resumes.
    output_dir: str
    # Identifier of the dataset (metadata only; nothing is downloaded).
    repo_id: str = "local/dataset"
    # The plan's dataset fingerprint: training refuses a dataset whose fingerprint differs (None: no check).
    dataset_fingerprint: str | None = None
    # Fold number within the plan, for names and logs; its repeat and position within the repeat.
    fold_id: int = 0
    repeat: int = 0
    fold_index: int = 0
    # Seed for weights, data order and dropout: the plan's seed. Same seed, same data: same result.
    seed: int = 0
    # torch threads for this process (None: torch's default). Set 1 when folds run in parallel.
    torch_threads: int | None = None
    # Folds training at once on the machine this fold runs on: without torch_threads, the fold takes an
    # equal share of that machine's CPU cores as torch threads, counted there (None: torch's default).
    folds_sharing_cpus: int | None = None
    # The price of the GPU this fold's call was requested with (cost.GpuPrice.to_dict()); None: no dollars.
    gpu_price: dict[str, Any] | None = None
    # Report the fold as stalled when its progress has not moved for this many seconds (None: no watch
    # in the fold's process; on Modal the orchestrator's trigger watches instead).
    stall_after_s: float | None = None
    # DataLoader workers; None: 0 when the fold's data is in memory (preloaded, or its frames cached),
    # lerobot-train's default (4, at most the CPU count) when items are decoded from video per step.
    num_workers: int | None = None
    # Load a dataset without camera features into memory once (identical items, no per-item parquet reads).
    preload: bool = True
    # Seed of the evaluation rollouts (seeds never used in recording are derived from it).
    sim_eval_seed: int = 0
    # Groups the folds of one k-fold run in W&B and names the run's outputs.
    run_id: str | None = None
    # Stop (after checkpointing) once this step is reached, as a preemption would. For tests and drills.
    stop_at_step: int | None = None
    # The candidate this fold trains, in a run that compares several ("" otherwise): names and labels.
    candidate: str = ""
    # The refit of the chosen candidate on every non-hold-out episode: val_episodes (the hold-out, tested
    # once at the end) may then be empty.
    final_fit: bool = False

    def __post_init__(self) -> None:
        self.dataset_root = str(self.dataset_root)
        self.output_dir = str(self.output_dir)
        self.train_episodes = [int(e) for e in self.train_episodes]
        self.val_episodes = [int(e) for e in self.val_episodes]
        check_declared(self)
        self._check_training()
        self._check_fold()

    def _check_fold(self) -> None:
        if not self.train_episodes:
            raise ValueError("train_episodes is empty: a fold needs at least one training episode.")
        if not self.val_episodes and not self.final_fit:
            raise ValueError("val_episodes is empty: a fold needs at least one held-out episode.")
        overlap = sorted(set(self.train_episodes) & set(self.val_episodes))
        if overlap:
            raise ValueError(
                f"episodes {overlap[:10]} are in both train_episodes and val_episodes; that would leak "
                "the validation data into training. Plan folds with lerobot_kfold.splits."
            )
        for name in ("torch_threads", "folds_sharing_cpus"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)!r}.")
        if self.stall_after_s is not None and not self.stall_after_s > 0:
            raise ValueError(f"stall_after_s must be above 0 or None, got {self.stall_after_s!r}.")
        if self.gpu_price is not None:
            from lerobot_kfold.cost import GpuPrice

            try:
                GpuPrice.from_dict(self.gpu_price)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"gpu_price must be cost.GpuPrice.to_dict(), got {self.gpu_price!r} ({exc})."
                ) from None
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers!r}.")
        if self.stop_at_step is not None and not 1 <= self.stop_at_step <= self.steps:
            raise ValueError(f"stop_at_step must be in [1, steps={self.steps}], got {self.stop_at_step}.")

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)

    @property
    def label(self) -> str:
        """How logs and Airflow name this task: "fold 3", "chunk10 / fold 3", "refit of chunk10"."""
        if self.final_fit:
            return f"refit of {self.candidate}" if self.candidate else "refit"
        return f"{self.candidate} / fold {self.fold_id}" if self.candidate else f"fold {self.fold_id}"

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
        # Names, logging, evaluation and execution settings do not change what is trained.
        volatile = {
            "run_id",
            "wandb_project",
            "wandb_mode",
            "repeat",
            "fold_index",
            "output_dir",
            "torch_threads",
            "folds_sharing_cpus",
            "gpu_price",
            "stall_after_s",
            "num_workers",
            "preload",
            "frame_cache_gb",
            "stop_at_step",
            "candidate",
            "final_fit",
            "policy_preset",
            *(f.name for f in dataclasses.fields(EvaluationSettings) if f.name != "eval_every"),
            "sim_eval_seed",
        }
        key = {name: value for name, value in data.items() if name not in volatile}
        key["policy_overrides"] = self.policy_fields()
        return key


def fold_config(
    training: TrainingSettings,
    evaluation: EvaluationSettings,
    fold: Any,
    *,
    dataset_root: str,
    repo_id: str,
    output_dir: str,
    seed: int,
    run_id: str | None = None,
    **execution: Any,
) -> FoldTrainingConfig:
    """One fold's config from the run's settings and a planned ``splits.Fold``.

    ``execution`` sets the knobs of where it runs (``torch_threads``, ``num_workers``, ``stop_at_step``).
    """
    return FoldTrainingConfig(
        **dataclasses.asdict(training),
        **dataclasses.asdict(evaluation),
        dataset_root=dataset_root,
        train_episodes=list(fold.train_episodes),
        val_episodes=list(fold.val_episodes),
        output_dir=str(output_dir),
        repo_id=repo_id,
        fold_id=fold.fold_id,
        repeat=fold.repeat,
        fold_index=fold.index,
        seed=seed,
        run_id=run_id,
        **execution,
    )
