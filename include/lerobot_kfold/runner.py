"""Run a whole k-fold cross-validation on this machine: the pipeline's steps, folds in a process pool.

This is the local backend in library form, and the body of the CLI's ``run``. It calls the same steps as
the DAG (``jobs``: prepare the dataset, plan, record the plan, train each fold, aggregate), so it writes
exactly the layout a DAG run writes (see ``storage``). Folds run one after another, or ``parallel`` at a
time in separate processes (each with its own torch thread budget, so they do not fight over cores). A
fold that fails does not stop the others: it leaves ``error.json``, and aggregation decides (through
``min_successful_folds``) whether the run as a whole may be summarized. With several candidates every
(candidate, fold) is one job of the pool; with ``refit`` the chosen candidate then trains once more.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from lerobot_kfold import jobs
from lerobot_kfold.results import CVSummary
from lerobot_kfold.run_settings import RunSettings, flatten
from lerobot_kfold.training_config import FoldTrainingConfig

Progress = Callable[[str], None]


@dataclass
class KFoldRunConfig:
    """A whole local k-fold run."""

    # Every run setting (dataset, split, training, evaluation, aggregation). Paths are local paths.
    settings: RunSettings
    # Folder for the plan, the folds and the summary. Re-running on it resumes unfinished folds.
    output_dir: str
    # Folds trained at the same time, each in its own process.
    parallel: int = 1
    # Name of the run (W&B group, report title). Defaults to the output folder's name.
    run_id: str | None = None
    # torch threads per fold; None: the CPU cores shared among the parallel folds.
    torch_threads: int | None = None
    # Stop every fold (after checkpointing) at this step, as a preemption would. For tests and drills.
    stop_at_step: int | None = None

    def __post_init__(self) -> None:
        self.output_dir = str(self.output_dir)
        if self.parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {self.parallel}.")
        if self.run_id is None:
            self.run_id = Path(self.output_dir).resolve().name

    def threads_per_fold(self) -> int | None:
        if self.torch_threads is None and self.parallel > 1:
            return max(1, (os.cpu_count() or 1) // self.parallel)
        return self.torch_threads


def _print_progress(message: str) -> None:
    # stderr: stdout is reserved for what a program reads (the JSON of `run --json`).
    print(message, file=sys.stderr, flush=True)


def plan_run(config: KFoldRunConfig, say: Progress = _print_progress) -> jobs.PlannedRun:
    """Check the settings and the dataset, and plan the folds (nothing is written or trained)."""
    config.settings.check_policy()
    root = str(Path(config.settings.dataset.dataset_root).resolve())  # storage paths: absolute ones
    training = config.settings.training
    dataset = jobs.PreparedDataset.from_dict(
        jobs.prepare_dataset(
            root,
            policy_type=training.policy_type,
            training=flatten({"training": training}),
            say=say,
            sim_eval_episodes=config.settings.evaluation.sim_eval_episodes,
        )
    )
    run_folder = str(Path(config.output_dir).resolve())
    return jobs.plan_run(
        config.settings,
        dataset,
        run_folder,
        config.run_id,
        torch_threads=config.threads_per_fold(),
        stop_at_step=config.stop_at_step,
    )


def train_fold_in_process(fold_config: dict[str, Any]) -> dict[str, Any]:
    """One fold through ``jobs.train_fold``, never raising: a failure is reported by its status.

    A top-level function so it can run in a worker process. The failure itself is in the fold's
    ``error.json``, which aggregation reads.
    """
    jobs.quiet_third_party_logs()
    try:
        return jobs.train_fold(fold_config, say=_print_progress)
    except Exception as exc:  # the fold failed; the others go on
        return {
            "fold_id": fold_config["fold_id"],
            "candidate": fold_config.get("candidate", ""),
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
        }


def train_folds(folds: Sequence[dict[str, Any]], parallel: int, say: Progress) -> list[dict[str, Any]]:
    """Every fold, ``parallel`` at a time; their compact results in fold order."""
    results: list[dict[str, Any]] = []

    labels = {(f.get("candidate", ""), f["fold_id"]): FoldTrainingConfig.from_dict(f).label for f in folds}

    def collect(result: dict[str, Any]) -> None:
        results.append(result)
        count = f"{len(results)}/{len(folds)}"
        label = labels[(result.get("candidate", ""), result["fold_id"])]
        if result["status"] != "ok":
            say(f"{label} {result['status']} ({count}): {result.get('error')}")
            return
        metrics = result["metrics"]
        success = metrics.get("sim_success_rate")
        extra = "" if success is None else f", success {success:.0%}"
        val_l1 = "" if "val_l1" not in metrics else f": val L1 {metrics['val_l1']:.5f}"
        say(f"{label} done ({count}){val_l1}{extra}, {result['wall_s']:.0f}s")

    if parallel == 1:
        for fold in folds:
            collect(train_fold_in_process(fold))
    else:
        # spawn: torch and MuJoCo are not fork-safe once initialised.
        with ProcessPoolExecutor(max_workers=parallel, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(train_fold_in_process, fold) for fold in folds]):
                collect(future.result())
    order = {key: position for position, key in enumerate(labels)}
    return sorted(results, key=lambda r: order[(r.get("candidate", ""), r["fold_id"])])


def run_kfold(config: KFoldRunConfig, progress: Progress | None = None) -> CVSummary:
    """Plan, train every fold and aggregate. Returns the summary, with the output file paths."""
    say = progress or _print_progress
    started = time.perf_counter()
    planned = plan_run(config, say)
    run_folder = str(Path(config.output_dir).resolve())
    plan_file = jobs.record_plan(run_folder, planned.plan)
    say(f"{planned.describe()} -> {plan_file}")
    results = train_folds([fold.to_dict() for fold in planned.folds], config.parallel, say)
    aggregate = functools.partial(
        jobs.aggregate,
        run_folder,
        planned.plan.to_dict(),
        dataclasses.asdict(planned.aggregation),
        config.run_id,
        fold_results=results,
        selection=dataclasses.asdict(planned.selection),
        say=say,
    )
    compact = aggregate()
    if config.settings.selection.refit:
        refit = jobs.plan_refit(
            config.settings,
            planned.plan,
            compact,
            run_folder,
            config.run_id,
            torch_threads=config.torch_threads,
            stop_at_step=config.stop_at_step,
        )
        say(f"{refit.label}: {len(refit.train_episodes)} episodes, {len(refit.val_episodes)} held out")
        compact = aggregate(refit_result=train_folds([refit.to_dict()], 1, say)[0])
    summary = CVSummary.from_dict(json.loads(Path(compact["outputs"]["summary_json"]).read_text()))
    return dataclasses.replace(
        summary, outputs=compact["outputs"], wall_s=round(time.perf_counter() - started, 2)
    )
