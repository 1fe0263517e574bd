"""Run a whole k-fold cross-validation on this machine: plan, train every fold, aggregate.

This is the local backend in library form. Folds run one after another, or ``parallel`` at a time in
separate processes (each with its own torch thread budget, so they do not fight over cores). A fold that
raises does not stop the others: it becomes a failed fold result, and aggregation decides (through
``min_successful_folds``) whether the run as a whole may be summarized.

Run folder layout::

    plan.json                 the fold manifest (hashed)
    folds/fold_000/           each fold's checkpoints, best model and result.json
    summary.json folds.csv report.png report.html
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from lerobot_kfold import dataset_info
from lerobot_kfold.aggregate import summarize, write_outputs
from lerobot_kfold.results import CVSummary, FoldResult
from lerobot_kfold.run_settings import RunSettings
from lerobot_kfold.splits import FoldPlan, plan_folds, write_plan
from lerobot_kfold.training_config import FoldTrainingConfig

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
PLAN_FILE = "plan.json"
FOLDS_DIR = "folds"


@dataclass
class KFoldRunConfig:
    """A whole local k-fold run."""

    # Every run setting (dataset, split, training, evaluation, aggregation).
    settings: RunSettings
    # Folder for the plan, the folds and the summary. Re-running on it resumes unfinished folds.
    output_dir: str
    # Folds trained at the same time, each in its own process.
    parallel: int = 1
    # Name of the run (W&B group, report title). Defaults to the output folder's name.
    run_id: str | None = None
    # torch threads per fold; None: the CPU cores shared among the parallel folds.
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        self.output_dir = str(self.output_dir)
        if self.parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {self.parallel}.")
        if self.run_id is None:
            self.run_id = Path(self.output_dir).resolve().name

    @property
    def dataset_root(self) -> str:
        return self.settings.dataset.dataset_root


def fold_output_dir(run_dir: Path, fold_id: int) -> Path:
    return run_dir / FOLDS_DIR / f"fold_{fold_id:03d}"


def plan_run(config: KFoldRunConfig) -> FoldPlan:
    """Check the dataset and plan the folds (nothing is trained)."""
    config.settings.check_policy()
    root = dataset_info.check_dataset_root(config.dataset_root)
    dataset_info.check_policy_features(root, config.settings.training.policy_type)
    identity = dataset_info.dataset_identity(root)
    return plan_folds(dataset_info.episode_infos(root), config.settings.split, identity)


def train_fold_safely(fold_config: dict[str, Any], annotations: dict[str, Any]) -> FoldResult:
    """Train one fold and never raise: an exception becomes a failed fold result with its error.

    A top-level function so it can run in a worker process. ``annotations`` (repeat, index) are set on
    the result whether the fold succeeded or not.
    """
    from lerobot_kfold.training import train_fold

    quiet_third_party_logs()
    try:
        config = FoldTrainingConfig.from_dict(fold_config)
        return dataclasses.replace(train_fold(config, progress=_print_progress), **annotations)
    except Exception as exc:
        log.debug("fold %s failed", fold_config.get("fold_id"), exc_info=True)
        return FoldResult.failed(
            fold_config["fold_id"],
            annotations.get("repeat"),
            annotations.get("index"),
            f"{type(exc).__name__}: {exc}",
            traceback.format_exc(limit=20),
        )


def _print_progress(message: str) -> None:
    # stderr: stdout is reserved for what a program reads (the JSON of `run --json`).
    print(message, file=sys.stderr, flush=True)


def quiet_third_party_logs() -> None:
    """Keep a fold's output to our own progress lines (datasets prints a bar per parquet map)."""
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover - datasets is a lerobot dependency
        pass
    for name in ("lerobot", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # lerobot probes torchcodec (needs a system FFmpeg) and logs a 40-line traceback when it is missing;
    # every dataset here is read with the pyav backend, so the probe's failure is irrelevant.
    logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)


def run_kfold(config: KFoldRunConfig, progress: Progress | None = None) -> CVSummary:
    """Plan, train every fold and aggregate. Returns the summary, with the output file paths."""
    say = progress or _print_progress
    started = time.perf_counter()
    run_dir = Path(config.output_dir)
    plan = plan_run(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_plan(plan, run_dir / PLAN_FILE)
    split = config.settings.split
    say(
        f"planned {plan.num_folds} folds over {plan.dataset.num_episodes} episodes "
        f"(k={split.k}, repeats={split.repeats}, hold-out {len(plan.holdout_episodes)}) "
        f"-> {run_dir / PLAN_FILE}"
    )
    threads = config.torch_threads
    if config.parallel > 1 and threads is None:
        threads = max(1, (os.cpu_count() or 1) // config.parallel)
    jobs = [
        (
            config.settings.fold_config(
                fold,
                dataset_root=config.dataset_root,
                repo_id=plan.dataset.repo_id,
                output_dir=str(fold_output_dir(run_dir, fold.fold_id)),
                run_id=config.run_id,
                torch_threads=threads,
            ).to_dict(),
            {"repeat": fold.repeat, "index": fold.index},
        )
        for fold in plan.folds
    ]
    results: list[FoldResult] = []

    def collect(result: FoldResult) -> None:
        results.append(result)
        count = f"{len(results)}/{len(jobs)}"
        if not result.ok:
            say(f"fold {result.fold_id} {result.status} ({count}): {result.error}")
            return
        metrics = result.metrics
        extra = f", success {metrics['sim_success_rate']:.0%}" if "sim_success_rate" in metrics else ""
        val_l1 = metrics.get("val_l1", float("nan"))
        say(f"fold {result.fold_id} done ({count}): val L1 {val_l1:.5f}{extra}, {result.wall_s or 0:.0f}s")

    if config.parallel == 1:
        for fold_config, annotations in jobs:
            collect(train_fold_safely(fold_config, annotations))
    else:
        # spawn: torch and MuJoCo are not fork-safe once initialised.
        with ProcessPoolExecutor(max_workers=config.parallel, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(train_fold_safely, c, a) for c, a in jobs]
            for future in as_completed(futures):
                collect(future.result())

    results.sort(key=lambda r: r.fold_id)
    summary = summarize(
        results, config.settings.aggregation, expected_folds=plan.num_folds, run_id=config.run_id
    )
    summary = dataclasses.replace(
        summary, plan_hash=plan.content_hash(), wall_s=round(time.perf_counter() - started, 2)
    )
    paths = write_outputs(summary, results, run_dir)
    return dataclasses.replace(summary, outputs=paths)
