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
- live progress (``progress``: the logs, the fold's folder, the orchestrator's channel, W&B) and what
  the fold cost where it ran (``cost``);
- a typed :class:`~lerobot_kfold.results.FoldResult` (JSON through ``to_dict``) that aggregation,
  Airflow XCom and Modal can carry.

:func:`train_fold` is a list of named steps: :func:`build_fold`, :func:`resume`, :func:`start_loop`,
:func:`training_loop` (with :func:`validation_step`), :func:`evaluate_in_simulator`,
:func:`fold_result` and :func:`finish`. The k-fold bookkeeping that must survive a resume lives in
:class:`~lerobot_kfold.fold_state.FoldState`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lerobot_kfold import checkpoints, dataset_info, fold_data
from lerobot_kfold.atomic_io import write_json_atomic
from lerobot_kfold.cost import GpuPrice, UsageMeter, cpu_cores_here, fold_cost
from lerobot_kfold.fold_folder import ForeignFolderError, check_fold_folder
from lerobot_kfold.fold_state import FoldState
from lerobot_kfold.policy_config import make_policy_config
from lerobot_kfold.progress import Channel, ProgressPublisher
from lerobot_kfold.results import INTERRUPTED, OK, FoldCost, FoldResult
from lerobot_kfold.storage import RESULT_FILE
from lerobot_kfold.training_config import FoldTrainingConfig
from lerobot_kfold.validation import validate

if TYPE_CHECKING:
    from lerobot_kfold.rollout import RolloutMetrics

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def resolve_device(requested: str) -> str:
    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but torch sees no CUDA GPU; use 'auto' or 'cpu'.")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


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
        num_workers=config.num_workers or 0,
        batch_size=config.batch_size,
        steps=config.steps,
        eval_steps=config.eval_every,
        save_freq=config.save_every,
        env_eval_freq=0,
    )
    train_cfg.optimizer = policy_cfg.get_optimizer_preset()
    train_cfg.scheduler = policy_cfg.get_scheduler_preset()
    return train_cfg


# wandb run ids: at most 128 characters, none of :;,#?/' (wandb raises UsageError otherwise).
_WANDB_ID_MAX = 128
_WANDB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def wandb_run_id(run_id: str | None, fold_id: int, name: str | None = None) -> str:
    """A W&B run id unique per (k-fold run, fold) that wandb accepts.

    Airflow run ids hold ``:``, ``+`` and ``/`` (``lerobot_kfold_cv/manual__2026-01-01T00:00:00+00:00``),
    which wandb rejects. A retried fold gets the same id, so it resumes its W&B run. Long ids are
    shortened with a hash of the whole run id, never by cutting off the fold number. ``name`` (the
    fold's W&B name, e.g. ``chunk10-fold-3``) replaces ``fold-N`` when candidates share fold numbers.
    """
    run = run_id or "run"
    suffix = f"-{name or f'fold-{fold_id}'}"
    slug = _WANDB_ID_UNSAFE.sub("-", run).strip("-") or "run"
    if len(slug) + len(suffix) > _WANDB_ID_MAX:
        digest = hashlib.sha1(run.encode()).hexdigest()[:12]
        slug = f"{slug[: _WANDB_ID_MAX - len(suffix) - len(digest) - 1]}-{digest}"
    return slug + suffix


def wandb_name(config: FoldTrainingConfig) -> str:
    """The fold's label as a W&B name: "fold-3" (as always), "chunk10-fold-3", "refit-of-chunk10"."""
    return _WANDB_ID_UNSAFE.sub("-", config.label).strip("-")[:64]


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
            name=wandb_name(config),
            id=wandb_run_id(config.run_id, config.fold_id, wandb_name(config)),
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
    channel: Channel | None = None,
) -> FoldResult:
    """Train and validate one fold; resume from ``output_dir`` when it holds a checkpoint.

    Returns the fold result (also written to ``output_dir/result.json``). A run stopped by
    ``stop_at_step`` returns ``status == "interrupted"``: running it again continues from there.
    ``on_checkpoint(step)`` runs after each checkpoint is on disk and after the result is written:
    on Modal it commits the Volume, so a preempted or retried call resumes from there. ``channel``
    receives each progress record (on Modal: the progress Dict the orchestrator's trigger watches).

    The steps run in a fixed order that the exact-resume guarantee depends on (every random draw of a
    fresh run happens at the same point in a resumed one): build the fold, resume from its checkpoint,
    start the loop (restoring the RNG last), train, evaluate in the simulator, build the result, finish.
    """
    say = progress or (lambda message: log.info(message))
    finished = check_fold_folder(config)  # before anything is written: another fold's folder is refused
    if finished is not None:
        say(f"{config.label}: already finished in {config.output_dir}; reusing its result")
        return finished

    meter = UsageMeter.start()
    publisher = ProgressPublisher(
        config.fold_id,
        config.steps,
        say=say,
        label=config.label,
        folder=config.output_path,
        channel=channel,
        stall_after_s=config.stall_after_s,
    )
    try:
        fold = build_fold(config, say)
        resumed = resume(fold, config, say)
        loop = start_loop(fold, config, resumed.step, publisher)
        if resumed.checkpoint is not None:
            # Restore the RNG last: building the accelerator, loaders and tracker above may draw from it,
            # and the fresh run drew those numbers *before* its first step, not at the checkpoint.
            _restore_rng(resumed.checkpoint)
        try:
            outcome = training_loop(fold, loop, resumed.state, config, resumed.step, on_checkpoint)
        finally:
            publisher.wandb_log = None  # the W&B run ends here; later records go to the other sinks
            loop.wandb.finish()
        rollout = None
        if outcome.status == OK and config.sim_eval_episodes > 0:
            rollout = evaluate_in_simulator(fold, loop, config, say)
        price = None if config.gpu_price is None else GpuPrice.from_dict(config.gpu_price)
        usage = fold_cost(meter, fold.device, price)
        result = fold_result(
            config,
            resumed.state,
            outcome,
            device=fold.device,
            resumed_from=resumed.resumed_from,
            wall_s=usage.wall_s,
            rollout=rollout,
            cost=usage,
        )
        result = finish(config, result, on_checkpoint)
        publisher.finished(result.steps)
        return result
    finally:
        publisher.close()


# ------------------------------------------------------------------------------------ build the fold


@dataclass
class BuiltFold:
    """Everything made once per run before training: data, policy, processors, optimizer."""

    device: str
    train_cfg: Any
    policy: Any
    preprocessor: Any
    postprocessor: Any
    optimizer: Any
    scheduler: Any
    sampler: Any
    data: fold_data.FoldData
    camera_keys: list[str]


def torch_threads_here(config: FoldTrainingConfig) -> int | None:
    """The fold's torch threads, decided on the machine that trains it: ``torch_threads``, else an equal
    share of this machine's CPU cores among ``folds_sharing_cpus`` folds, else None (torch's default)."""
    if config.torch_threads is not None:
        return config.torch_threads
    if config.folds_sharing_cpus is not None:
        return max(1, cpu_cores_here() // config.folds_sharing_cpus)
    return None


def _check_inputs(config: FoldTrainingConfig) -> str:
    """Fail fast on a missing, incomplete or other dataset, or features the policy cannot use.

    Returns the device.
    """
    dataset_info.check_dataset_files(config.dataset_root)
    dataset_info.check_policy_features(config.dataset_root, config.policy_type)
    dataset_info.check_fingerprint(config.dataset_root, config.dataset_fingerprint)
    threads = torch_threads_here(config)
    if threads is not None:
        torch.set_num_threads(threads)
    device = resolve_device(config.device)
    config.output_path.mkdir(parents=True, exist_ok=True)
    return device


def build_fold(config: FoldTrainingConfig, say: Progress) -> BuiltFold:
    """The fold's datasets (normalized with its training episodes only), policy and optimizer."""
    device = _check_inputs(config)
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.optim.factory import make_optimizer_and_scheduler
    from lerobot.policies import make_policy, make_pre_post_processors
    from lerobot.utils.random_utils import set_seed

    policy_cfg = make_policy_config(config, device)
    meta = fold_data.load_metadata(config.repo_id, config.dataset_root)
    stats = _fold_stats_for_policy(config, meta)
    # Everything downstream (make_policy, the processors) reads stats from here: only the fold's own.
    meta.stats = stats
    delta_timestamps = resolve_delta_timestamps(policy_cfg, meta)
    train_set = fold_data.make_episode_dataset(
        config.repo_id, config.dataset_root, config.train_episodes, delta_timestamps
    )
    train_set.meta.stats = stats
    val_set = None  # a refit without a hold-out has nothing to validate on
    if config.val_episodes:
        val_set = fold_data.make_episode_dataset(
            config.repo_id, config.dataset_root, config.val_episodes, delta_timestamps
        )
        val_set.meta.stats = stats
    sampler = fold_data.make_train_sampler(
        train_set, config.seed, drop_n_last_frames=getattr(policy_cfg, "drop_n_last_frames", 0)
    )
    data = fold_data.fold_data(
        train_set,
        val_set,
        preload=config.preload,
        frame_cache_gb=config.frame_cache_gb,
        num_workers=config.num_workers,
    )
    say(
        f"{config.label}: {len(config.train_episodes)} train episodes ({len(data.train)} frames), "
        f"{len(config.val_episodes)} held-out episodes ({len(data.val or ())} frames), device {device}, "
        f"{data.describe()}"
    )

    set_seed(config.seed)
    policy = make_policy(cfg=policy_cfg, ds_meta=meta)
    preprocessor, postprocessor = make_pre_post_processors(policy_cfg=policy_cfg, dataset_stats=stats)
    train_cfg = _train_pipeline_config(config, policy_cfg)
    optimizer, scheduler = make_optimizer_and_scheduler(train_cfg, policy)
    return BuiltFold(
        device=device,
        train_cfg=train_cfg,
        policy=policy,
        preprocessor=preprocessor,
        postprocessor=postprocessor,
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        data=data,
        camera_keys=list(meta.camera_keys),
    )


# -------------------------------------------------------------------------------------------- resume


@dataclass
class Resumed:
    """Where training starts: step 0 with a fresh state, or a checkpoint's step and state."""

    state: FoldState
    step: int
    checkpoint: Path | None

    @property
    def resumed_from(self) -> int | None:
        return None if self.checkpoint is None else self.step


def resume(fold: BuiltFold, config: FoldTrainingConfig, say: Progress) -> Resumed:
    """Load the last checkpoint's model, optimizer, scheduler and sampler position into ``fold``.

    Refuses a checkpoint of other settings (``ForeignFolderError``, as ``check_fold_folder`` did first):
    continuing it would mix two configurations in one result. The RNG is restored later (train_fold).
    """
    checkpoint = checkpoints.last_checkpoint(config.output_path)
    if checkpoint is None:
        return Resumed(FoldState(resume_key=config.resume_key()), 0, None)
    from lerobot.common.train_utils import load_training_state
    from lerobot.datasets import compute_sampler_state
    from safetensors.torch import load_model

    state = checkpoints.read_fold_state(checkpoint)
    if state.resume_key != config.resume_key():
        raise ForeignFolderError(
            f"{config.output_path} holds a checkpoint of a different fold configuration; resume needs "
            "identical settings. Use a new output folder, or delete this one to start over."
        )
    model_file = checkpoint / checkpoints.PRETRAINED_MODEL / "model.safetensors"
    load_model(fold.policy, str(model_file), device=fold.device)
    step, fold.optimizer, fold.scheduler = load_training_state(checkpoint, fold.optimizer, fold.scheduler)
    fold.sampler.load_state_dict(compute_sampler_state(step, len(fold.sampler), config.batch_size, 1))
    say(f"{config.label}: resuming from step {step} ({checkpoint})")
    return Resumed(state, step, checkpoint)


def _restore_rng(checkpoint: Path) -> None:
    from lerobot.utils.constants import TRAINING_STATE_DIR
    from lerobot.utils.random_utils import load_rng_state

    load_rng_state(checkpoint / TRAINING_STATE_DIR)


# -------------------------------------------------------------------------------------- training loop


@dataclass
class TrainingLoop:
    """The accelerator-prepared policy and optimizer, the loaders, lerobot's tracker, W&B and progress."""

    accelerator: Any
    policy: Any
    optimizer: Any
    scheduler: Any
    unwrapped: Any
    loader: Any
    val_loader: Any
    tracker: Any
    wandb: _WandbRun
    progress: ProgressPublisher


@dataclass(frozen=True)
class LoopOutcome:
    # "ok" when training reached config.steps, "interrupted" when stop_at_step ended it early.
    status: str
    step: int
    steps_this_run: int


def start_loop(
    fold: BuiltFold, config: FoldTrainingConfig, step: int, progress: ProgressPublisher
) -> TrainingLoop:
    """Prepare policy and optimizer with accelerate, make the loaders, the tracker and the W&B run."""
    from accelerate import Accelerator
    from lerobot.utils.logging_utils import MetricsTracker

    device = fold.device
    if device == "cuda":  # as lerobot-train sets them
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    accelerator = Accelerator(
        cpu=device == "cpu", mixed_precision=config.mixed_precision, step_scheduler_with_optimizer=False
    )
    policy, optimizer, scheduler = accelerator.prepare(fold.policy, fold.optimizer, fold.scheduler)
    workers, pin = fold.data.num_workers, device == "cuda"
    loader = fold_data.make_loader(
        fold.data.train, config.batch_size, workers, sampler=fold.sampler, pin_memory=pin
    )
    val_loader = None
    if fold.data.val is not None:
        val_loader = fold_data.make_loader(fold.data.val, config.batch_size, workers, pin_memory=pin)
    tracker = MetricsTracker(
        config.batch_size,
        len(fold.data.train),
        len(config.train_episodes),
        train_meters(),
        initial_step=step,
        accelerator=accelerator,
    )
    wandb = _WandbRun(config)
    progress.wandb_log = wandb.log if config.wandb_mode != "disabled" else None
    return TrainingLoop(
        accelerator=accelerator,
        policy=policy,
        optimizer=optimizer,
        scheduler=scheduler,
        unwrapped=accelerator.unwrap_model(policy),
        loader=loader,
        val_loader=val_loader,
        tracker=tracker,
        wandb=wandb,
        progress=progress,
    )


def training_loop(
    fold: BuiltFold,
    loop: TrainingLoop,
    state: FoldState,
    config: FoldTrainingConfig,
    step: int,
    on_checkpoint: Callable[[int], None] | None,
) -> LoopOutcome:
    """lerobot's update step until ``config.steps`` (or ``stop_at_step``), validating and checkpointing.

    Progress is published at every validation and checkpoint, and on the publisher's time rhythm.
    """
    from lerobot.utils.utils import cycle

    batches = cycle(loop.loader)
    first_step = step
    loop_started = time.perf_counter()
    loop.progress.begin(step)
    loop.policy.train()
    while step < config.steps:
        loss = _update(fold, loop, next(batches))
        step += 1
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {step}; lower learning_rate.")
        state.record_train_loss(loss)
        loop.progress.train_step(step, loss)

        if loop.val_loader is not None and (step % config.eval_every == 0 or step == config.steps):
            validation_step(fold, loop, state, config, step)

        stopping = config.stop_at_step is not None and step >= config.stop_at_step and step < config.steps
        if step % config.save_every == 0 or step == config.steps or stopping:
            state.add_train_seconds(time.perf_counter() - loop_started)
            loop_started = time.perf_counter()
            _save_checkpoint(fold, loop, state, config, step)
            if on_checkpoint is not None:
                on_checkpoint(step)
            loop.progress.checkpoint(step)
        if stopping:
            return LoopOutcome(INTERRUPTED, step, step - first_step)
    return LoopOutcome(OK, step, step - first_step)


def _update(fold: BuiltFold, loop: TrainingLoop, batch: dict[str, Any]) -> float:
    """One optimizer step with lerobot's ``update_policy``; returns the batch's training loss."""
    from lerobot.scripts.lerobot_train import update_policy

    batch = fold_data.camera_frames_to_float(batch, fold.camera_keys, fold.device)
    batch = fold.preprocessor(batch)
    loop.tracker, _ = update_policy(
        loop.tracker,
        loop.policy,
        batch,
        loop.optimizer,
        fold.train_cfg.optimizer.grad_clip_norm,
        accelerator=loop.accelerator,
        lr_scheduler=loop.scheduler,
    )
    return float(loop.tracker.loss.val)


def validation_step(
    fold: BuiltFold,
    loop: TrainingLoop,
    state: FoldState,
    config: FoldTrainingConfig,
    step: int,
) -> None:
    """Validate on the held-out episodes, extend the learning curve, keep the best model on disk."""
    metrics = validate(
        loop.unwrapped, fold.preprocessor, fold.postprocessor, loop.val_loader, fold.camera_keys, fold.device
    )
    point, improved = state.record_validation(step, metrics)
    if improved:
        checkpoints.save_pretrained(
            checkpoints.best_model_dir(config.output_path),
            loop.unwrapped,
            fold.preprocessor,
            fold.postprocessor,
        )
    train_loss = point["train_loss"]
    loop.wandb.log({"train/loss": train_loss, **{f"eval/{k}": v for k, v in point.items()}}, step)
    loop.progress.validation(step, metrics.val_l1, metrics.val_l1_normalized)


def _save_checkpoint(
    fold: BuiltFold, loop: TrainingLoop, state: FoldState, config: FoldTrainingConfig, step: int
) -> None:
    checkpoints.save_checkpoint(
        config.output_path,
        step,
        fold.train_cfg,
        loop.unwrapped,
        loop.optimizer,
        loop.scheduler,
        fold.preprocessor,
        fold.postprocessor,
        state,
        batch_size=config.batch_size,
    )


# ------------------------------------------------------------------------------- evaluation and finish


def evaluate_in_simulator(
    fold: BuiltFold, loop: TrainingLoop, config: FoldTrainingConfig, say: Progress
) -> RolloutMetrics:
    """Closed-loop rollouts of the final policy from seeds never used in recording."""
    from lerobot_kfold.rollout import evaluate_in_simulator as rollouts

    say(f"{config.label}: closed-loop evaluation on {config.sim_eval_episodes} unseen seeds")
    loop.progress.evaluating(config.steps)
    rollout = rollouts(
        loop.unwrapped,
        fold.preprocessor,
        fold.postprocessor,
        config.dataset_root,
        config.sim_eval_episodes,
        seed=config.sim_eval_seed,
        max_steps=config.sim_eval_max_steps,
    )
    say(f"{config.label}: success rate {rollout.sim_success_rate:.0%} ({rollout.sim_seconds:.1f}s)")
    return rollout


def fold_result(
    config: FoldTrainingConfig,
    state: FoldState,
    outcome: LoopOutcome,
    *,
    device: str,
    resumed_from: int | None,
    wall_s: float,
    rollout: RolloutMetrics | None = None,
    cost: FoldCost | None = None,
) -> FoldResult:
    """The fold's result from its training state: metrics of the last validation, best, curve, files."""
    last = state.last_validation
    metrics: dict[str, float] = {}
    if last is not None:
        metrics = {
            "val_l1": last.val_l1,
            "val_l1_normalized": last.val_l1_normalized,
            "best_val_l1": state.best_val_l1,
        }
    if rollout is not None:
        metrics["sim_success_rate"] = rollout.sim_success_rate
        metrics["sim_mean_episode_length"] = rollout.sim_mean_episode_length
    train_seconds = state.train_seconds
    output_dir = config.output_path
    return FoldResult(
        fold_id=config.fold_id,
        repeat=config.repeat,
        index=config.fold_index,
        status=outcome.status,
        train_episodes=list(config.train_episodes),
        val_episodes=list(config.val_episodes),
        steps=outcome.step,
        steps_this_run=outcome.steps_this_run,
        resumed_from_step=resumed_from,
        wall_s=wall_s,
        train_seconds=round(train_seconds, 3),
        steps_per_s=round(outcome.step / train_seconds, 3) if train_seconds > 0 else None,
        device=device,
        final_train_loss=state.last_train_loss,
        metrics=metrics,
        val_mae_per_dim=None if last is None else last.val_mae_per_dim,
        best_step=state.best_step,
        best_val_mae_per_dim=state.best_val_mae_per_dim,
        learning_curve=state.learning_curve,
        checkpoints={
            "last": str(checkpoints.last_checkpoint(output_dir) or ""),
            "best": str(checkpoints.best_model_dir(output_dir)),
        },
        output_dir=str(output_dir),
        resume_key=config.resume_key(),
        sim=None if rollout is None else rollout.as_dict(),
        cost=cost,
    )


def finish(
    config: FoldTrainingConfig, result: FoldResult, on_checkpoint: Callable[[int], None] | None
) -> FoldResult:
    """Write ``result.json``, then call ``on_checkpoint`` so that it is committed (Modal Volume) too."""
    write_json_atomic(config.output_path / RESULT_FILE, result.to_dict())
    if on_checkpoint is not None:
        on_checkpoint(result.steps)
    return result
