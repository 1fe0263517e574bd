"""Train one fold: a lerobot policy on the fold's training episodes, validated on its held-out ones.

Built from lerobot's own pieces (``make_policy``, ``make_pre_post_processors``,
``make_optimizer_and_scheduler``, ``EpisodeAwareSampler``, ``update_policy``, its checkpoint format), so
the model, loss, optimizer presets and update step are exactly lerobot's. What this module adds is
what k-fold needs and ``lerobot-train`` lacks:

- fold-correct normalization (statistics of the training episodes only, see
  :func:`lerobot_kfold.dataset_info.fold_statistics`);
- validation on the held-out episodes in action units, with a learning curve and the best checkpoint;
- sample-exact resume from the last checkpoint when the same fold runs again on the same folder;
- optional closed-loop evaluation in the simulator and optional W&B logging;
- a JSON-serializable result that aggregation, Airflow XCom and Modal can carry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lerobot_kfold import checkpoints, dataset_info, fold_data
from lerobot_kfold.atomic_io import write_json_atomic
from lerobot_kfold.training_config import FoldTrainingConfig
from lerobot_kfold.validation import validate

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
Progress = Callable[[str], None]


class CheckpointMismatchError(ValueError):
    """The output folder holds a checkpoint of a different fold configuration."""


def resolve_device(requested: str) -> str:
    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but torch sees no CUDA GPU; use 'auto' or 'cpu'.")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_policy_overrides(policy_type: str, overrides: dict[str, Any]) -> set[str]:
    """Fail unless ``policy_type`` is a lerobot policy and every override names one of its config fields.

    Returns the config's field names. Called before planning, so a typo costs no training.
    """
    import dataclasses

    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies import factory  # noqa: F401  (registers lerobot's policy configs)

    try:
        config_cls = PreTrainedConfig.get_choice_class(policy_type)
    except Exception as exc:
        raise ValueError(f"unknown policy_type {policy_type!r}: lerobot has no such policy.") from exc
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"policy_overrides {unknown} are not fields of lerobot's {config_cls.__name__}.")
    return fields


def make_policy_config(config: FoldTrainingConfig, device: str):
    """lerobot's policy config for ``policy_type`` with the fold's chunk size, lr and overrides."""
    from lerobot.policies.factory import make_policy_config as lerobot_make_policy_config

    overrides = config.policy_fields()
    fields = check_policy_overrides(config.policy_type, overrides)
    kwargs: dict[str, Any] = {"device": device, "push_to_hub": False}
    if "chunk_size" in fields:
        kwargs["chunk_size"] = config.chunk_size
    if "n_action_steps" in fields:
        kwargs["n_action_steps"] = config.chunk_size
    if "optimizer_lr" in fields:
        kwargs["optimizer_lr"] = config.learning_rate
    if "pretrained_backbone_weights" in fields:
        # Pretrained backbones are downloaded from the internet at construction; off unless asked for.
        kwargs["pretrained_backbone_weights"] = None
    kwargs.update(overrides)
    return lerobot_make_policy_config(config.policy_type, **kwargs)


def _fold_stats_for_policy(config: FoldTrainingConfig, meta) -> dict[str, dict[str, Any]]:
    """Training-episode statistics, with ImageNet statistics for cameras as lerobot-train uses them."""
    from lerobot.utils.constants import IMAGENET_STATS

    stats: dict[str, dict[str, Any]] = dataset_info.fold_statistics(
        config.dataset_root, config.train_episodes
    )
    for key in meta.camera_keys:
        if key in getattr(meta, "depth_keys", []):
            continue
        for stat_name, value in IMAGENET_STATS.items():
            stats.setdefault(key, {})[stat_name] = torch.tensor(value, dtype=torch.float32)
    return stats


def _train_pipeline_config(config: FoldTrainingConfig, policy_cfg):
    """lerobot's TrainPipelineConfig for this fold: its optimizer presets and checkpoint format need it."""
    from lerobot.configs.default import DatasetConfig
    from lerobot.configs.train import TrainPipelineConfig

    train_cfg = TrainPipelineConfig(
        dataset=DatasetConfig(
            repo_id=config.repo_id,
            root=config.dataset_root,
            episodes=config.train_episodes,
            video_backend="pyav",
        ),
        policy=policy_cfg,
        output_dir=Path(config.output_dir),
        job_name=f"fold_{config.fold_id}",
        seed=config.seed,
        num_workers=config.num_workers,
        batch_size=config.batch_size,
        steps=config.steps,
        eval_steps=config.eval_every,
        save_freq=config.save_every,
        env_eval_freq=0,
    )
    train_cfg.optimizer = policy_cfg.get_optimizer_preset()
    train_cfg.scheduler = policy_cfg.get_scheduler_preset()
    return train_cfg


def _existing_result(config: FoldTrainingConfig) -> dict[str, Any] | None:
    """A finished result for the same configuration in the output folder (a retry after success)."""
    path = config.output_path / RESULT_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if result.get("status") == "ok" and result.get("resume_key") == config.resume_key():
        return result
    return None


# wandb run ids: at most 128 characters, none of :;,#?/' (wandb raises UsageError otherwise).
_WANDB_ID_MAX = 128
_WANDB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def wandb_run_id(run_id: str | None, fold_id: int) -> str:
    """A W&B run id unique per (k-fold run, fold) that wandb accepts.

    Airflow run ids hold ``:``, ``+`` and ``/`` (``lerobot_kfold_cv/manual__2026-01-01T00:00:00+00:00``),
    which wandb rejects. A retried fold gets the same id, so it resumes its W&B run. Long ids are
    shortened with a hash of the whole run id, never by cutting off the fold number.
    """
    run = run_id or "run"
    suffix = f"-fold-{fold_id}"
    slug = _WANDB_ID_UNSAFE.sub("-", run).strip("-") or "run"
    if len(slug) + len(suffix) > _WANDB_ID_MAX:
        digest = hashlib.sha1(run.encode()).hexdigest()[:12]
        slug = f"{slug[: _WANDB_ID_MAX - len(suffix) - len(digest) - 1]}-{digest}"
    return slug + suffix


class _WandbRun:
    """Optional W&B logging. The API key is read by wandb from its environment, never passed here."""

    def __init__(self, config: FoldTrainingConfig):
        self._run = None
        if config.wandb_mode == "disabled":
            return
        import wandb

        self._run = wandb.init(
            project=config.wandb_project,
            group=config.run_id,
            name=f"fold-{config.fold_id}",
            id=wandb_run_id(config.run_id, config.fold_id),
            resume="allow",
            mode=config.wandb_mode,
            dir=str(config.output_path),
            config={k: v for k, v in config.to_dict().items() if k not in ("train_episodes", "val_episodes")},
        )

    def log(self, values: dict[str, Any], step: int) -> None:
        if self._run is not None:
            self._run.log(values, step=step)

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()


def train_meters() -> dict[str, Any]:
    """The meters of lerobot's MetricsTracker that its ``update_policy`` writes to.

    ``update_policy`` records GPU memory whenever CUDA exists (whatever the device), and the tracker
    refuses metrics it was not given: lerobot-train registers ``gpu_mem_gb`` the same way.
    """
    from lerobot.utils.logging_utils import AverageMeter

    meters = {
        "loss": AverageMeter("loss", ":.3f"),
        "grad_norm": AverageMeter("grdn", ":.3f"),
        "lr": AverageMeter("lr", ":0.1e"),
        "update_s": AverageMeter("updt_s", ":.3f"),
    }
    if torch.cuda.is_available():
        meters["gpu_mem_gb"] = AverageMeter("mem_gb", ":.2f", reduction="max")
    return meters


def train_fold(
    config: FoldTrainingConfig,
    progress: Progress | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train and validate one fold; resume from ``output_dir`` when it holds a checkpoint.

    Returns the fold result (also written to ``output_dir/result.json``). A run stopped by
    ``stop_at_step`` returns ``status == "interrupted"``: running it again continues from there.
    ``on_checkpoint(step)`` runs after each checkpoint is on disk and after the result is written:
    on Modal it commits the Volume, so a preempted or retried call resumes from there.
    """
    say = progress or (lambda message: log.info(message))
    finished = _existing_result(config)
    if finished is not None:
        say(f"fold {config.fold_id}: already finished in {config.output_dir}; reusing its result")
        return finished

    started = time.perf_counter()
    dataset_info.check_dataset_root(config.dataset_root)
    dataset_info.check_policy_features(config.dataset_root, config.policy_type)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    device = resolve_device(config.device)
    output_dir = config.output_path
    output_dir.mkdir(parents=True, exist_ok=True)

    from accelerate import Accelerator
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.optim.factory import make_optimizer_and_scheduler
    from lerobot.policies import make_policy, make_pre_post_processors
    from lerobot.scripts.lerobot_train import update_policy
    from lerobot.utils.logging_utils import MetricsTracker
    from lerobot.utils.random_utils import set_seed
    from lerobot.utils.utils import cycle

    policy_cfg = make_policy_config(config, device)
    meta = fold_data.load_metadata(config.repo_id, config.dataset_root)
    stats = _fold_stats_for_policy(config, meta)
    # Everything downstream (make_policy, the processors) reads stats from here: only the fold's own.
    meta.stats = stats
    delta_timestamps = resolve_delta_timestamps(policy_cfg, meta)
    train_set = fold_data.make_episode_dataset(
        config.repo_id, config.dataset_root, config.train_episodes, delta_timestamps
    )
    val_set = fold_data.make_episode_dataset(
        config.repo_id, config.dataset_root, config.val_episodes, delta_timestamps
    )
    train_set.meta.stats = stats
    val_set.meta.stats = stats
    camera_keys = list(meta.camera_keys)
    sampler = fold_data.make_train_sampler(
        train_set, config.seed, drop_n_last_frames=getattr(policy_cfg, "drop_n_last_frames", 0)
    )
    train_data = fold_data.maybe_preload(train_set, config.preload)
    val_data = fold_data.maybe_preload(val_set, config.preload)
    say(
        f"fold {config.fold_id}: {len(config.train_episodes)} train episodes ({len(train_data)} frames), "
        f"{len(config.val_episodes)} held-out episodes ({len(val_data)} frames), device {device}"
    )

    set_seed(config.seed)
    policy = make_policy(cfg=policy_cfg, ds_meta=meta)
    preprocessor, postprocessor = make_pre_post_processors(policy_cfg=policy_cfg, dataset_stats=stats)
    train_cfg = _train_pipeline_config(config, policy_cfg)
    optimizer, scheduler = make_optimizer_and_scheduler(train_cfg, policy)

    fold_state: dict[str, Any] = {
        "resume_key": config.resume_key(),
        "learning_curve": [],
        "best_val_l1": None,
        "best_step": None,
        "window_loss_sum": 0.0,
        "window_loss_count": 0,
        "last_train_loss": None,
        "train_seconds": 0.0,
    }
    step = 0
    resumed_from = None
    checkpoint = checkpoints.last_checkpoint(output_dir)
    if checkpoint is not None:
        from lerobot.common.train_utils import load_training_state
        from lerobot.datasets import compute_sampler_state
        from safetensors.torch import load_model

        saved = checkpoints.read_fold_state(checkpoint)
        if saved.get("resume_key") != config.resume_key():
            raise CheckpointMismatchError(
                f"{output_dir} holds a checkpoint of a different fold configuration; resume needs identical "
                "settings. Use a new output folder, or delete this one to start over."
            )
        load_model(
            policy, str(checkpoint / checkpoints.PRETRAINED_MODEL / "model.safetensors"), device=device
        )
        step, optimizer, scheduler = load_training_state(checkpoint, optimizer, scheduler)
        sampler.load_state_dict(compute_sampler_state(step, len(sampler), config.batch_size, 1))
        fold_state = saved
        resumed_from = step
        say(f"fold {config.fold_id}: resuming from step {step} ({checkpoint})")

    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="no", step_scheduler_with_optimizer=False)
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    loader = fold_data.make_loader(
        train_data, config.batch_size, config.num_workers, sampler=sampler, pin_memory=device == "cuda"
    )
    val_loader = fold_data.make_loader(val_data, config.batch_size, config.num_workers)
    tracker = MetricsTracker(
        config.batch_size,
        len(train_data),
        len(config.train_episodes),
        train_meters(),
        initial_step=step,
        accelerator=accelerator,
    )
    wandb_run = _WandbRun(config)
    if checkpoint is not None:
        # Restore the RNG last: building the accelerator, loaders and tracker above may draw from it,
        # and the fresh run drew those numbers *before* its first step, not at the checkpoint.
        from lerobot.utils.constants import TRAINING_STATE_DIR
        from lerobot.utils.random_utils import load_rng_state

        load_rng_state(checkpoint / TRAINING_STATE_DIR)
    unwrapped = accelerator.unwrap_model(policy)
    batches = cycle(loader)
    first_step = step
    loop_started = time.perf_counter()
    rate_mark = (step, loop_started)
    report_every = max(1, config.steps // 10)
    status = "ok"
    policy.train()
    try:
        while step < config.steps:
            batch = next(batches)
            for key in camera_keys:
                if key in batch and batch[key].dtype == torch.uint8:
                    batch[key] = batch[key].to(dtype=torch.float32) / 255.0
            batch = preprocessor(batch)
            tracker, _ = update_policy(
                tracker,
                policy,
                batch,
                optimizer,
                train_cfg.optimizer.grad_clip_norm,
                accelerator=accelerator,
                lr_scheduler=scheduler,
            )
            step += 1
            loss = float(tracker.loss.val)
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at step {step}; lower learning_rate.")
            fold_state["window_loss_sum"] += loss
            fold_state["window_loss_count"] += 1
            fold_state["last_train_loss"] = loss

            if step % config.eval_every == 0 or step == config.steps:
                metrics = validate(unwrapped, preprocessor, postprocessor, val_loader, camera_keys)
                train_loss = fold_state["window_loss_sum"] / max(fold_state["window_loss_count"], 1)
                fold_state["window_loss_sum"], fold_state["window_loss_count"] = 0.0, 0
                point = {
                    "step": step,
                    "train_loss": train_loss,
                    "val_l1": metrics.val_l1,
                    "val_l1_normalized": metrics.val_l1_normalized,
                }
                fold_state["learning_curve"].append(point)
                best = fold_state["best_val_l1"]
                if best is None or metrics.val_l1 < best:
                    fold_state["best_val_l1"] = metrics.val_l1
                    fold_state["best_step"] = step
                    fold_state["best_val_mae_per_dim"] = metrics.val_mae_per_dim
                    checkpoints.save_pretrained(
                        checkpoints.best_model_dir(output_dir), unwrapped, preprocessor, postprocessor
                    )
                fold_state["last_validation"] = metrics.as_dict()
                wandb_run.log({"train/loss": train_loss, **{f"eval/{k}": v for k, v in point.items()}}, step)
                say(
                    f"fold {config.fold_id}: step {step}/{config.steps} train loss {train_loss:.4f} "
                    f"val L1 {metrics.val_l1:.5f} (normalized {metrics.val_l1_normalized:.4f})"
                )
            elif step % report_every == 0:
                now = time.perf_counter()
                rate = (step - rate_mark[0]) / max(now - rate_mark[1], 1e-9)
                rate_mark = (step, now)
                say(f"fold {config.fold_id}: step {step}/{config.steps} loss {loss:.4f} ({rate:.1f} steps/s)")

            stopping = config.stop_at_step is not None and step >= config.stop_at_step and step < config.steps
            if step % config.save_every == 0 or step == config.steps or stopping:
                fold_state["train_seconds"] = fold_state.get("train_seconds", 0.0) + (
                    time.perf_counter() - loop_started
                )
                loop_started = time.perf_counter()
                checkpoints.save_checkpoint(
                    output_dir,
                    step,
                    train_cfg,
                    unwrapped,
                    optimizer,
                    scheduler,
                    preprocessor,
                    postprocessor,
                    fold_state,
                    batch_size=config.batch_size,
                )
                if on_checkpoint is not None:
                    on_checkpoint(step)
            if stopping:
                status = "interrupted"
                break
    finally:
        wandb_run.finish()

    steps_this_run = step - first_step
    result = _result(config, fold_state, status, step, device, resumed_from, steps_this_run, started)
    if status == "ok" and config.sim_eval_episodes > 0:
        from lerobot_kfold.rollout import evaluate_in_simulator

        say(f"fold {config.fold_id}: closed-loop evaluation on {config.sim_eval_episodes} unseen seeds")
        rollout = evaluate_in_simulator(
            unwrapped,
            preprocessor,
            postprocessor,
            config.dataset_root,
            config.sim_eval_episodes,
            seed=config.sim_eval_seed,
            max_steps=config.sim_eval_max_steps,
        )
        result["sim"] = rollout.as_dict()
        result["metrics"]["sim_success_rate"] = rollout.sim_success_rate
        result["metrics"]["sim_mean_episode_length"] = rollout.sim_mean_episode_length
        say(
            f"fold {config.fold_id}: success rate {rollout.sim_success_rate:.0%} ({rollout.sim_seconds:.1f}s)"
        )
    result["wall_s"] = round(time.perf_counter() - started, 3)
    write_json_atomic(output_dir / RESULT_FILE, result)
    if on_checkpoint is not None:
        on_checkpoint(step)
    return result


def _result(
    config: FoldTrainingConfig,
    fold_state: dict[str, Any],
    status: str,
    step: int,
    device: str,
    resumed_from: int | None,
    steps_this_run: int,
    started: float,
) -> dict[str, Any]:
    last = fold_state.get("last_validation") or {}
    train_seconds = fold_state.get("train_seconds", 0.0)
    metrics: dict[str, float] = {}
    if last:
        metrics = {
            "val_l1": last["val_l1"],
            "val_l1_normalized": last["val_l1_normalized"],
            "best_val_l1": fold_state["best_val_l1"],
        }
    output_dir = config.output_path
    return {
        "fold_id": config.fold_id,
        "repeat": config.repeat,
        "index": config.fold_index,
        "status": status,
        "error": None,
        "train_episodes": config.train_episodes,
        "val_episodes": config.val_episodes,
        "steps": step,
        "steps_this_run": steps_this_run,
        "resumed_from_step": resumed_from,
        "wall_s": round(time.perf_counter() - started, 3),
        "train_seconds": round(train_seconds, 3),
        "steps_per_s": round(step / train_seconds, 3) if train_seconds > 0 else None,
        "device": device,
        "final_train_loss": fold_state.get("last_train_loss"),
        "metrics": metrics,
        "val_mae_per_dim": last.get("val_mae_per_dim"),
        "best_step": fold_state.get("best_step"),
        "best_val_mae_per_dim": fold_state.get("best_val_mae_per_dim"),
        "learning_curve": fold_state["learning_curve"],
        "checkpoints": {
            "last": str(checkpoints.last_checkpoint(output_dir) or ""),
            "best": str(checkpoints.best_model_dir(output_dir)),
        },
        "output_dir": str(output_dir),
        "resume_key": config.resume_key(),
    }
