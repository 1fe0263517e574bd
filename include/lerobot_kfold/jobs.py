"""The units of work of a k-fold run, as plain functions of JSON-ready arguments.

Why a module of its own: the same bodies run as Modal functions (``modal_app`` wraps them and commits
the Volume) and inside the Airflow worker for the local backend, so both backends take the same inputs
and give results of the same shape. Paths in the arguments are storage paths (see ``storage``).

- ``prepare_dataset``: fetch a hub dataset once into storage (or check one already there) and return
  what fold planning needs. k folds then read the same copy instead of downloading it k times.
- ``train_fold``: train and validate one fold; its folder holds checkpoints, ``result.json`` and, when
  it fails, ``error.json``.
- ``aggregate``: read every fold's result from storage, summarize, write the summary files and report.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lerobot_kfold import dataset_info, storage
from lerobot_kfold.aggregate import AggregateConfig, summarize, write_outputs
from lerobot_kfold.atomic_io import write_json_atomic
from lerobot_kfold.results import FoldResult
from lerobot_kfold.splits import FoldPlan, write_plan
from lerobot_kfold.training_config import FoldTrainingConfig

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
FOLDS_DIR = "folds"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
# Keys of a fold result that go back to the orchestrator (XCom); the full result stays in result.json.
_RESULT_KEYS = (
    "fold_id",
    "repeat",
    "index",
    "status",
    "metrics",
    "steps",
    "best_step",
    "device",
    "wall_s",
    "steps_per_s",
    "resumed_from_step",
    "final_train_loss",
)


def progress(message: str) -> None:
    """Progress lines of long jobs: stdout, which Airflow task logs and Modal's log view both show."""
    print(message, file=sys.stdout, flush=True)


def fold_folder(run_folder: str, fold_id: int) -> str:
    """Storage path of one fold's folder inside a run folder."""
    return f"{run_folder}/{FOLDS_DIR}/fold_{fold_id:03d}"


def prepare_dataset(
    dataset_root: str = "",
    repo_id: str = "",
    revision: str = "",
    policy_type: str = "act",
) -> dict[str, Any]:
    """Make the dataset available in storage and describe it for fold planning.

    With ``dataset_root`` the dataset must already be there (a storage path: relative paths live under
    the storage root). With only ``repo_id`` it is fetched from the hub into ``datasets/<owner>/<name>``
    unless a complete copy is already there; the copy appears atomically, so concurrent or retried
    calls never see half a dataset. The policy's feature needs are checked here, before any GPU is paid.
    """
    from lerobot_kfold.runner import quiet_third_party_logs

    quiet_third_party_logs()
    if not dataset_root and not repo_id:
        raise ValueError("give dataset_root (a LeRobot dataset folder) or repo_id (a hub dataset id)")
    location = dataset_root or storage.dataset_folder(repo_id)
    root = storage.resolve(location)
    if not dataset_root and not (root / "meta" / "info.json").is_file():
        _fetch_from_hub(repo_id, revision or None, root)
    root = dataset_info.check_dataset_root(root)
    dataset_info.check_policy_features(root, policy_type)
    identity = dataset_info.dataset_identity(root, repo_id or None)
    episodes = [
        {"index": e.index, "task": e.task, "length": e.length} for e in dataset_info.episode_infos(root)
    ]
    info = dataset_info.read_info(root)
    progress(
        f"dataset {identity.repo_id}: {len(episodes)} episodes at {root} (fingerprint {identity.fingerprint})"
    )
    return {
        "dataset_root": location,
        "repo_id": identity.repo_id,
        "fingerprint": identity.fingerprint,
        "num_episodes": identity.num_episodes,
        "fps": info.get("fps"),
        "features": sorted(info.get("features", {})),
        "episodes": episodes,
    }


def _fetch_from_hub(repo_id: str, revision: str | None, target: Path) -> None:
    from huggingface_hub import snapshot_download

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        progress(f"fetching dataset {repo_id} ({revision or 'main'}) from the hub into {target}")
        snapshot_download(repo_id=repo_id, repo_type="dataset", revision=revision, local_dir=staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "meta" / "info.json").is_file():  # not a concurrent fetch that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def train_fold(config: dict[str, Any], on_checkpoint: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train one fold from a FoldTrainingConfig dict whose paths are storage paths.

    Re-running on the same output folder resumes from its last checkpoint, or returns the finished
    result. A failure leaves ``error.json`` in the fold folder (for aggregation) and re-raises, so the
    orchestrator sees a failed task. Returns the fold result without its learning curve.
    """
    from lerobot_kfold.runner import quiet_third_party_logs
    from lerobot_kfold.training import train_fold as train

    quiet_third_party_logs()
    fold = FoldTrainingConfig.from_dict(config)
    fold.dataset_root = str(storage.resolve(fold.dataset_root))
    fold.output_dir = str(storage.resolve(fold.output_dir))
    error_file = Path(fold.output_dir) / ERROR_FILE
    try:
        result = train(fold, progress=progress, on_checkpoint=on_checkpoint)
    except Exception as exc:
        failure = FoldResult.failed(
            fold.fold_id,
            fold.repeat,
            fold.fold_index,
            f"{type(exc).__name__}: {exc}",
            traceback.format_exc(limit=20),
        )
        write_json_atomic(error_file, failure.to_dict())
        if on_checkpoint is not None:
            on_checkpoint(-1)
        raise
    error_file.unlink(missing_ok=True)
    full = result.to_dict()
    compact = {key: full[key] for key in _RESULT_KEYS}
    compact["output_dir"] = config["output_dir"]
    return compact


def read_fold_result(fold_dir: Path, fold_id: int | None = None) -> FoldResult | None:
    """The fold's result.json, else its error.json, else None (the fold never got to write either).

    ``fold_id`` is assumed for a file that names none. A file that is not a fold result raises
    ``ValueError`` naming it.
    """
    for name in (RESULT_FILE, ERROR_FILE):
        path = fold_dir / name
        if path.is_file():
            return FoldResult.from_json_file(path, fold_id=fold_id)
    return None


def aggregate(
    run_folder: str,
    plan: dict[str, Any],
    aggregation: dict[str, Any] | None = None,
    run_id: str | None = None,
    fold_results: Sequence[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Summarize a run from the fold folders in storage and write the summary files and report.

    ``fold_results`` are the results the orchestrator received (Airflow: the mapped folds' XComs).
    When given, only those folds count as succeeded, so a fold a user stopped is not counted because
    its call wrote a result anyway; the full results are still read from storage.
    Every fold of the plan counts: one without a result is a failed fold, never silently dropped;
    ``min_successful_folds`` in ``aggregation`` decides whether the summary may still be given
    (``NotEnoughFoldsError`` otherwise). Writes ``plan.json``, ``summary.json``, ``folds.csv``,
    ``report.png`` and ``report.html`` into the run folder, and returns the summary without per-fold
    rows (small enough for XCom).
    """
    config = AggregateConfig(**(aggregation or {}))
    fold_plan = FoldPlan.from_dict(plan)
    run_dir = storage.resolve(run_folder)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_plan(fold_plan, run_dir / PLAN_FILE)
    received = None
    if fold_results is not None:
        received = {int(r["fold_id"]) for r in fold_results if r and r.get("status") == "ok"}
    results = []
    for fold in fold_plan.folds:
        result = read_fold_result(storage.resolve(fold_folder(run_folder, fold.fold_id)), fold.fold_id)
        if received is not None and fold.fold_id not in received and result is not None and result.ok:
            result = FoldResult.failed(
                fold.fold_id,
                fold.repeat,
                fold.index,
                "the fold's task did not succeed in the orchestrator (failed, or stopped by a user)",
            )
        if result is not None:
            results.append(result)
    summary = summarize(results, config, expected_folds=fold_plan.num_folds, run_id=run_id)
    summary = dataclasses.replace(
        summary,
        plan_hash=fold_plan.content_hash(),
        dataset={"repo_id": fold_plan.dataset.repo_id, "fingerprint": fold_plan.dataset.fingerprint},
    )
    paths = write_outputs(summary, results, run_dir)
    progress(
        f"aggregated {summary.totals.n_succeeded}/{summary.totals.n_folds} folds -> {paths['summary_json']}"
    )
    summary = dataclasses.replace(summary, run_folder=run_folder, outputs=paths)
    return summary.to_dict(include_folds=False)
