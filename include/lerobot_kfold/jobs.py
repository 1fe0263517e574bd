"""The k-fold pipeline: its four steps as functions, the only pipeline there is.

Why one module: the same bodies run as Modal functions (``modal_app`` wraps them and commits the
Volume), inside the Airflow worker for the local backend, and in the CLI's ``run`` (``runner`` maps
``train_fold`` over a process pool). Every caller gets the same inputs, results and folder layout
(``storage``). Arguments that cross Modal or XCom are JSON-ready dicts; paths are storage paths.

- ``prepare_dataset``: fetch a hub dataset once into storage (or check one already there) and describe
  it for planning. k folds then read the same copy instead of downloading it k times.
- ``plan_run``: the fold plan and one training config per fold, from the run's settings.
- ``record_plan``: write ``plan.json`` into the run folder, refusing a folder that holds another plan.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lerobot_kfold import dataset_info, storage
from lerobot_kfold.aggregate import AggregateConfig, summarize, write_outputs
from lerobot_kfold.atomic_io import write_json_atomic
from lerobot_kfold.declared import build
from lerobot_kfold.demo import read_demo_metadata
from lerobot_kfold.fold_folder import ForeignFolderError
from lerobot_kfold.progress import read_progress
from lerobot_kfold.results import FailedFold, FoldResult
from lerobot_kfold.splits import (
    DatasetIdentity,
    EpisodeInfo,
    Fold,
    FoldPlan,
    plan_folds,
    read_plan,
    write_plan,
)
from lerobot_kfold.storage import ERROR_FILE, PLAN_FILE, RESULT_FILE, fold_folder
from lerobot_kfold.training_config import FoldTrainingConfig, TrainingSettings

if TYPE_CHECKING:
    from lerobot_kfold.run_settings import RunSettings

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

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
    "cost",
)
__all__ = ["ERROR_FILE", "PLAN_FILE", "RESULT_FILE", "fold_folder"]


def progress(message: str) -> None:
    """Progress lines of long jobs: stdout, which Airflow task logs and Modal's log view both show."""
    print(message, file=sys.stdout, flush=True)


def quiet_third_party_logs() -> None:
    """Keep a job's output to our own progress lines (datasets prints a bar per parquet map)."""
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


@dataclass(frozen=True)
class PreparedDataset:
    """What planning needs to know of a dataset in storage (``prepare_dataset``'s result)."""

    dataset_root: str
    repo_id: str
    fingerprint: str | None
    num_episodes: int
    fps: float | None
    features: list[str]
    episodes: list[dict[str, Any]]
    # Recorded from the simulator (closed-loop evaluation needs it).
    simulator: bool = False

    def identity(self) -> DatasetIdentity:
        return DatasetIdentity(
            repo_id=self.repo_id,
            root=self.dataset_root,
            fingerprint=self.fingerprint,
            num_episodes=self.num_episodes,
        )

    def episode_infos(self) -> list[EpisodeInfo]:
        return [EpisodeInfo(e["index"], e["task"], e["length"]) for e in self.episodes]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedDataset:
        return cls(**data)


def prepare_dataset(
    dataset_root: str = "",
    repo_id: str = "",
    revision: str = "",
    policy_type: str = "act",
    training: dict[str, Any] | None = None,
    say: Progress = progress,
) -> dict[str, Any]:
    """Make the dataset available in storage and describe it for fold planning.

    With ``dataset_root`` the dataset must already be there (a storage path: relative paths live under
    the storage root). With only ``repo_id`` it is fetched from the hub into ``datasets/<owner>/<name>``
    unless a complete copy is already there; the copy appears atomically, so concurrent or retried
    calls never see half a dataset. Checked here, before any GPU is paid: every data file is there and
    readable, the dataset has the features the policy needs, and, given the run's ``training`` settings
    (flat, as XCom carries them), lerobot can build that policy for this dataset.
    """
    quiet_third_party_logs()
    if not dataset_root and not repo_id:
        raise ValueError("give dataset_root (a LeRobot dataset folder) or repo_id (a hub dataset id)")
    location = dataset_root or storage.dataset_folder(repo_id)
    root = storage.resolve(location)
    if not dataset_root and not (root / "meta" / "info.json").is_file():
        _fetch_from_hub(repo_id, revision or None, root, say)
    root = dataset_info.check_dataset_files(root)
    dataset_info.check_policy_features(root, policy_type)
    identity = dataset_info.dataset_identity(root, repo_id or None)
    if training is not None:
        from lerobot_kfold.policy_config import check_policy_builds

        check_policy_builds(build(TrainingSettings, training), str(root), identity.repo_id)
    episodes = [
        {"index": e.index, "task": e.task, "length": e.length} for e in dataset_info.episode_infos(root)
    ]
    info = dataset_info.read_info(root)
    say(
        f"dataset {identity.repo_id}: {len(episodes)} episodes at {root} (fingerprint {identity.fingerprint})"
    )
    prepared = PreparedDataset(
        dataset_root=location,
        repo_id=identity.repo_id,
        fingerprint=identity.fingerprint,
        num_episodes=identity.num_episodes,
        fps=info.get("fps"),
        features=sorted(info.get("features", {})),
        episodes=episodes,
        simulator=read_demo_metadata(root) is not None,
    )
    return prepared.to_dict()


def _fetch_from_hub(repo_id: str, revision: str | None, target: Path, say: Progress) -> None:
    from huggingface_hub import snapshot_download

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        say(f"fetching dataset {repo_id} ({revision or 'main'}) from the hub into {target}")
        snapshot_download(repo_id=repo_id, repo_type="dataset", revision=revision, local_dir=staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "meta" / "info.json").is_file():  # not a concurrent fetch that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class PlannedRun:
    """A run's fold plan, one training config per fold, and how to aggregate them."""

    plan: FoldPlan
    folds: list[FoldTrainingConfig]
    aggregation: AggregateConfig

    def describe(self) -> str:
        split = self.plan.config
        return (
            f"planned {self.plan.num_folds} folds over {self.plan.dataset.num_episodes} episodes "
            f"(k={split.k}, repeats={split.repeats}, held out {len(self.plan.holdout_episodes)}), "
            f"plan {self.plan.content_hash()[:12]}"
        )


def plan_run(
    settings: RunSettings,
    dataset: PreparedDataset,
    run_folder: str,
    run_id: str | None,
    **execution: Any,
) -> PlannedRun:
    """Plan the folds over the prepared dataset's episodes and configure each fold's training.

    ``execution`` (e.g. ``torch_threads``) sets how the folds run, not what they train.
    """
    plan = plan_folds(dataset.episode_infos(), settings.split, dataset.identity())
    check_data_supports(settings, dataset, plan)
    folds = [
        settings.fold_config(
            fold,
            dataset_root=dataset.dataset_root,
            repo_id=dataset.repo_id,
            output_dir=fold_folder(run_folder, fold.fold_id),
            run_id=run_id,
            dataset_fingerprint=plan.dataset.fingerprint,
            **execution,
        )
        for fold in plan.folds
    ]
    return PlannedRun(plan=plan, folds=folds, aggregation=settings.aggregation)


def check_data_supports(settings: RunSettings, dataset: PreparedDataset, plan: FoldPlan) -> None:
    """Refuse settings this dataset cannot support, before any fold trains."""
    longest = max((e["length"] for e in dataset.episodes), default=0)
    chunk = settings.training.chunk_size
    if chunk > longest:
        raise ValueError(
            f"chunk_size={chunk} is longer than every episode (the longest has {longest} frames): "
            f"every action chunk would be mostly padding. Lower chunk_size to at most {longest}."
        )
    smallest = min(plan.folds, key=lambda fold: fold.train_frames or 0)
    batch = settings.training.batch_size
    if smallest.train_frames is not None and batch > smallest.train_frames:
        raise ValueError(
            f"batch_size={batch} is larger than fold {smallest.fold_id}'s training set "
            f"({smallest.train_frames} frames): lower batch_size to at most {smallest.train_frames}."
        )
    if settings.evaluation.sim_eval_episodes and not dataset.simulator:
        raise ValueError(
            f"sim_eval_episodes={settings.evaluation.sim_eval_episodes} needs a dataset recorded from the "
            "simulator (`python -m lerobot_kfold demo-dataset`); this one is not: set sim_eval_episodes to 0"
        )


def record_plan(run_folder: str, plan: FoldPlan) -> Path:
    """Write ``plan.json`` into the run folder, or find the same plan there (a resumed run).

    A folder that holds another plan (other settings, another dataset) is refused before anything is
    written: its folds belong to that plan, and mixing them would average results of two plans.
    """
    path = storage.resolve(run_folder) / PLAN_FILE
    if path.is_file():
        try:
            existing = read_plan(path)
        except ValueError as exc:
            raise ValueError(
                f"{path} is not a readable fold plan ({exc}); use another output folder"
            ) from exc
        if existing.content_hash() != plan.content_hash():
            raise ValueError(
                f"{path.parent} holds another run's plan (hash {existing.content_hash()[:12]}, "
                f"{existing.num_folds} folds; this run's is {plan.content_hash()[:12]}, {plan.num_folds} "
                "folds): use a new output folder, or the same settings and dataset to resume that run"
            )
        return path
    return write_plan(plan, path)


def train_fold(
    config: dict[str, Any],
    on_checkpoint: Callable[[int], None] | None = None,
    say: Progress = progress,
    channel: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one fold from a FoldTrainingConfig dict whose paths are storage paths.

    ``channel`` receives the fold's progress records (see ``progress``), e.g. for the orchestrator.

    Re-running on the same output folder resumes from its last checkpoint, or returns the finished
    result. A failure in training leaves ``error.json`` in the fold folder (for aggregation) and
    re-raises, so the orchestrator sees a failed task; inputs refused up front (another fold's folder,
    another or incomplete dataset) write nothing. Returns the fold result without its learning curve.
    """
    from lerobot_kfold.training import train_fold as train

    quiet_third_party_logs()
    fold = FoldTrainingConfig.from_dict(config)
    fold.dataset_root = str(storage.resolve(fold.dataset_root))
    fold.output_dir = str(storage.resolve(fold.output_dir))
    error_file = Path(fold.output_dir) / ERROR_FILE
    try:
        result = train(fold, progress=say, on_checkpoint=on_checkpoint, channel=channel)
    except (ForeignFolderError, dataset_info.DatasetError):
        raise  # inputs refused before training: the folder may not be this fold's to write in
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


def planned_fold_result(run_folder: str, fold: Fold) -> FoldResult | None:
    """The result in a planned fold's folder, as a failed fold when it is unreadable or not this fold's.

    Never averaged in: a corrupted file, or a result whose episodes are not the plan's for this fold
    (a folder copied from another run), counts as a failed fold whose error says what was found.
    """
    folder = storage.resolve(fold_folder(run_folder, fold.fold_id))
    try:
        result = read_fold_result(folder, fold.fold_id)
    except ValueError as exc:
        return FoldResult.failed(fold.fold_id, fold.repeat, fold.index, f"unreadable fold result: {exc}")
    if result is None or not result.ok:
        return result
    planned = (fold.fold_id, list(fold.train_episodes), list(fold.val_episodes))
    found = (result.fold_id, result.train_episodes, result.val_episodes)
    if found != planned:
        return FoldResult.failed(
            fold.fold_id,
            fold.repeat,
            fold.index,
            f"{folder / RESULT_FILE} is the result of another plan (fold {result.fold_id}, other episodes); "
            "it was not averaged in",
        )
    return result


def _with_last_progress(run_folder: str, failed: FailedFold) -> FailedFold:
    """A failed fold with the last progress line it wrote (``progress.json``): how far it got."""
    last = read_progress(storage.resolve(fold_folder(run_folder, failed.fold_id)))
    return failed if last is None else dataclasses.replace(failed, last_progress=last.line())


def aggregate(
    run_folder: str,
    plan: dict[str, Any],
    aggregation: dict[str, Any] | None = None,
    run_id: str | None = None,
    fold_results: Sequence[dict[str, Any] | None] | None = None,
    say: Progress = progress,
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
    record_plan(run_folder, fold_plan)
    received = None
    if fold_results is not None:
        received = {int(r["fold_id"]) for r in fold_results if r and r.get("status") == "ok"}
    results = []
    for fold in fold_plan.folds:
        result = planned_fold_result(run_folder, fold)
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
        failed_folds=[_with_last_progress(run_folder, failed) for failed in summary.failed_folds],
    )
    paths = write_outputs(summary, results, run_dir)
    say(f"aggregated {summary.totals.n_succeeded}/{summary.totals.n_folds} folds -> {paths['summary_json']}")
    summary = dataclasses.replace(summary, run_folder=run_folder, outputs=paths)
    return summary.to_dict(include_folds=False)
