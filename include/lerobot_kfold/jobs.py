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
  With several candidates it also compares them on their paired folds and chooses one (``comparison``).
- ``plan_refit``: the chosen candidate's config for one more training on every non-hold-out episode,
  tested once on the hold-out; it runs through ``train_fold``, then ``aggregate`` again records the test.
- ``compare_runs``: the same comparison over finished runs that share a fold plan.
"""

from __future__ import annotations

import dataclasses
import json
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
from lerobot_kfold.aggregate import (
    METRIC_DIRECTIONS,
    AggregateConfig,
    NotEnoughFoldsError,
    run_cost,
    summarize,
    write_outputs,
)
from lerobot_kfold.atomic_io import write_json_atomic
from lerobot_kfold.candidates import BASE_NAME, SelectionSettings, folder_key
from lerobot_kfold.comparison import CandidateFolds, compare, rank_correlation, rollout_counts, wilson
from lerobot_kfold.declared import build
from lerobot_kfold.demo import read_demo_metadata
from lerobot_kfold.fold_folder import ForeignFolderError
from lerobot_kfold.progress import read_progress
from lerobot_kfold.results import CVSummary, FailedFold, FinalTest, FoldResult, RunCost
from lerobot_kfold.splits import (
    DatasetIdentity,
    EpisodeInfo,
    Fold,
    FoldPlan,
    plan_folds,
    read_plan,
    write_plan,
)
from lerobot_kfold.storage import ERROR_FILE, PLAN_FILE, RESULT_FILE, fold_folder, refit_folder
from lerobot_kfold.training_config import EvaluationSettings, FoldTrainingConfig, TrainingSettings

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
    # The v2.1 dataset this v3.0 copy was converted from (``ConversionRecord.to_dict()``), or None.
    conversion: dict[str, Any] | None = None

    def identity(self) -> DatasetIdentity:
        return DatasetIdentity(
            repo_id=self.repo_id,
            root=self.dataset_root,
            fingerprint=self.fingerprint,
            num_episodes=self.num_episodes,
            converted_from=conversion_note(self.conversion),
        )

    def episode_infos(self) -> list[EpisodeInfo]:
        return [EpisodeInfo(e["index"], e["task"], e["length"]) for e in self.episodes]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedDataset:
        return cls(**data)


def conversion_note(record: dict[str, Any] | None) -> dict[str, str] | None:
    """What the plan keeps of a conversion: only what is the same on a retry (no timings, no action)."""
    if not record:
        return None
    return {
        "source_root": str(record["source_location"]),
        "source_version": str(record["source_version"]),
        "converter": f"lerobot {record['lerobot_version']} convert_dataset_v21_to_v30",
    }


def prepare_dataset(
    dataset_root: str = "",
    repo_id: str = "",
    revision: str = "",
    policy_type: str = "act",
    training: dict[str, Any] | None = None,
    say: Progress = progress,
    sim_eval_episodes: int = 0,
) -> dict[str, Any]:
    """Make the dataset available in storage and describe it for fold planning.

    With ``dataset_root`` the dataset must already be there (a storage path: relative paths live under
    the storage root). With only ``repo_id`` it is fetched from the hub into ``datasets/<owner>/<name>``
    unless a complete copy is already there; the copy appears atomically, so concurrent or retried
    calls never see half a dataset. A LeRobot v2.1 dataset is converted once, with lerobot's own
    converter, into a sibling ``<folder>_v3.0`` (the original stays as it is), and the folds read that.
    Checked here, before any GPU is paid: every data file is there and readable, the dataset has the
    features the policy needs, and, given the run's ``training`` settings (flat, as XCom carries them),
    lerobot can build that policy for this dataset; its cameras are RGB, every video decodes, and with
    rollouts (``sim_eval_episodes``) they are the simulator's; for a camera dataset the backbone's
    pretrained weights are in the torch cache (fetched once when absent).
    """
    quiet_third_party_logs()
    if not dataset_root and not repo_id:
        raise ValueError("give dataset_root (a LeRobot dataset folder) or repo_id (a hub dataset id)")
    location = dataset_root or storage.dataset_folder(repo_id)
    root = storage.resolve(location)
    if not dataset_root and not (root / "meta" / "info.json").is_file():
        _fetch_from_hub(repo_id, revision or None, root, say)
    location, conversion = _readable_version(location, say)
    root = dataset_info.check_dataset_files(storage.resolve(location))
    dataset_info.check_policy_features(root, policy_type)
    settings = build(TrainingSettings, training) if training is not None else None
    cameras = check_cameras_and_backbone(root, policy_type, sim_eval_episodes, settings)
    identity = dataset_info.dataset_identity(root, repo_id or None)
    if settings is not None:
        from lerobot_kfold.policy_config import check_policy_builds

        check_policy_builds(settings, str(root), identity.repo_id)
    episodes = [
        {"index": e.index, "task": e.task, "length": e.length} for e in dataset_info.episode_infos(root)
    ]
    info = dataset_info.read_info(root)
    say(
        f"dataset {identity.repo_id}: {len(episodes)} episodes at {root} (fingerprint {identity.fingerprint}"
        f"; cameras: {', '.join(cameras) or 'none'})"
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
        conversion=conversion,
    )
    return prepared.to_dict()


def check_cameras_and_backbone(
    root: Path, policy_type: str, sim_eval_episodes: int, training: TrainingSettings | None
) -> list[str]:
    """The camera checks of a run (``dataset_cameras``) and, for a camera dataset, the backbone's
    pretrained weights in the torch cache (fetched once when absent). Returns the camera features."""
    from lerobot_kfold import backbone, dataset_cameras
    from lerobot_kfold.policy_config import backbone_weights

    cameras = dataset_cameras.check_cameras_for_run(root, policy_type, sim_eval_episodes)
    if cameras and training is not None:
        backbone.ensure_available(backbone_weights(training))
    return cameras


def check_dataset_for_run(location: str, training: TrainingSettings, evaluation: EvaluationSettings) -> None:
    """The dataset checks of ``validate`` (backend local, the dataset already in storage).

    A v2.1 dataset passes here: ``prepare_dataset`` converts it and checks the v3.0 copy.
    """
    from lerobot_kfold import dataset_format

    root = storage.resolve(location)
    if (root / dataset_format.INFO_PATH).is_file():
        version = dataset_format.dataset_version(root)
        if version == dataset_format.V21:
            return
        if version != dataset_format.V30:
            raise dataset_format.DatasetFormatError(dataset_format.unsupported_format_message(root, version))
    root = dataset_info.check_dataset_root(root)
    dataset_info.check_policy_features(root, training.policy_type)
    check_cameras_and_backbone(root, training.policy_type, evaluation.sim_eval_episodes, training)


def _readable_version(location: str, say: Progress) -> tuple[str, dict[str, Any] | None]:
    """The storage path of a v3.0 copy of the dataset at ``location`` (converting v2.1 once), and the
    conversion record; other formats fail with what to do about them."""
    from lerobot_kfold import dataset_format

    root = storage.resolve(location)
    if not any(
        (root / rel).is_file() for rel in (dataset_format.INFO_PATH, dataset_format.LEGACY_V1_INFO_PATH)
    ):
        dataset_info.check_dataset_root(root)  # no dataset at all: its message says what to pass instead
    version = dataset_format.dataset_version(root)
    if version == dataset_format.V30:
        return location, None
    if version != dataset_format.V21:
        raise dataset_format.DatasetFormatError(dataset_format.unsupported_format_message(root, version))
    converted = storage.converted_dataset_folder(location)
    say(f"{location} is LeRobot {version}: converting it once to {dataset_format.V30} in {converted}")
    record = dataset_format.convert_v21_to_v30(root, storage.resolve(converted), exist_ok=True)
    say(f"{record.action.replace('_', ' ')}: {record.total_episodes} episodes ({record.seconds:.1f}s)")
    return converted, {**record.to_dict(), "source_location": location}


# Fetches that left their staging folder behind (a killed process) are removed after this long.
STALE_STAGING_S = 3600
# What snapshot_download writes into its local_dir besides the repository's files.
HUB_CLIENT_FILES = (".cache",)


def _fetch_from_hub(repo_id: str, revision: str | None, target: Path, say: Progress) -> None:
    """``snapshot_download`` into a staging folder beside ``target``, then one rename.

    The client's own bookkeeping (``.cache/huggingface/download``) is dropped before the rename, so the
    dataset folder holds the repository's files only. A concurrent fetch that renamed first wins; a
    fetch cut off leaves only its hidden staging folder (removed by a later fetch once stale), never a
    half dataset at ``target``.
    """
    from huggingface_hub import snapshot_download

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_stagings(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.fetching-", dir=target.parent))
    try:
        say(f"fetching dataset {repo_id} ({revision or 'main'}) from the hub into {target}")
        snapshot_download(repo_id=repo_id, repo_type="dataset", revision=revision, local_dir=staging)
        for name in HUB_CLIENT_FILES:
            shutil.rmtree(staging / name, ignore_errors=True)
        if not (staging / "meta" / "info.json").is_file():
            raise dataset_info.DatasetError(
                f"hub dataset {repo_id} ({revision or 'main'}) has no meta/info.json: not a LeRobot dataset"
            )
        try:
            staging.rename(target)
        except OSError:
            if not (target / "meta" / "info.json").is_file():  # not a concurrent fetch that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_stagings(target: Path) -> None:
    import time

    for folder in target.parent.glob(f".{target.name}.fetching-*"):
        try:
            if time.time() - folder.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:  # another fetch removed it
            continue


@dataclass(frozen=True)
class PlannedRun:
    """A run's fold plan, one training config per (candidate, fold), and how to aggregate them."""

    plan: FoldPlan
    folds: list[FoldTrainingConfig]
    aggregation: AggregateConfig
    selection: SelectionSettings = dataclasses.field(default_factory=SelectionSettings)

    def describe(self) -> str:
        split = self.plan.config
        names = [name for name, _ in self.selection.named_overrides()]
        tasks = f" x {len(names)} candidates ({', '.join(names)})" if len(names) > 1 else ""
        return (
            f"planned {self.plan.num_folds} folds{tasks} over {self.plan.dataset.num_episodes} episodes "
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
    """Plan the folds over the prepared dataset's episodes and configure each candidate's fold training.

    Every candidate gets the same folds and the plan's seed, so their fold results pair up. A run of one
    candidate has today's layout (``folds/fold_NNN``); several get a folder each (``folds/<name>/...``).
    ``execution`` (e.g. ``torch_threads``) sets how the folds run, not what they train.
    """
    plan = plan_folds(dataset.episode_infos(), settings.split, dataset.identity())
    candidates = settings.candidates()
    folds = []
    for candidate in candidates:
        key = folder_key(candidate.name, len(candidates))
        try:
            check_data_supports(candidate.settings, dataset, plan)
        except ValueError as exc:
            raise ValueError(f"candidate {candidate.name!r}: {exc}" if key else str(exc)) from None
        folds += [
            candidate.settings.fold_config(
                fold,
                dataset_root=dataset.dataset_root,
                repo_id=dataset.repo_id,
                output_dir=fold_folder(run_folder, fold.fold_id, key),
                run_id=run_id,
                dataset_fingerprint=plan.dataset.fingerprint,
                candidate=key,
                **execution,
            )
            for fold in plan.folds
        ]
    return PlannedRun(plan=plan, folds=folds, aggregation=settings.aggregation, selection=settings.selection)


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
    local_dataset_dir: str | None = None,
    channel: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one fold from a FoldTrainingConfig dict whose paths are storage paths.

    ``channel`` receives the fold's progress records (see ``progress``), e.g. for the orchestrator.

    Re-running on the same output folder resumes from its last checkpoint, or returns the finished
    result. A failure in training leaves ``error.json`` in the fold folder (for aggregation) and
    re-raises, so the orchestrator sees a failed task; inputs refused up front (another fold's folder,
    another or incomplete dataset) write nothing. Returns the fold result without its learning curve.
    With ``local_dataset_dir`` (a Modal container: the Volume is a network file system) the dataset is
    first copied to that folder on the machine's own disk, and the fold reads the copy.
    """
    from lerobot_kfold.training import train_fold as train

    quiet_third_party_logs()
    fold = FoldTrainingConfig.from_dict(config)
    fold.output_dir = str(storage.resolve(fold.output_dir))
    error_file = Path(fold.output_dir) / ERROR_FILE
    try:
        if local_dataset_dir:
            fold.dataset_root = str(copy_to_local_disk(fold.dataset_root, Path(local_dataset_dir), say))
        else:
            fold.dataset_root = str(storage.resolve(fold.dataset_root))
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
    compact["candidate"] = fold.candidate
    return compact


def copy_to_local_disk(location: str, local_root: Path, say: Progress = progress) -> Path:
    """A copy of the dataset at storage path ``location`` under ``local_root`` (reused when complete).

    Why: on Modal the storage root is a Volume, a network file system, and a fold reads its dataset
    many times (the frame cache decodes every video once, lerobot's streaming reads decode per step).
    The copy is made in a staging folder and renamed, so a container stopped mid-copy leaves no half
    dataset that a retry in the same container would trust.
    """
    import time

    source = dataset_info.check_dataset_root(storage.resolve(location))
    target = local_root / storage.safe_name(str(location).strip("/").replace("/", "__"))
    complete = (target / "meta" / "info.json").is_file()
    if complete and dataset_info.fingerprint(target) == dataset_info.fingerprint(source):
        return target
    started = time.perf_counter()
    shutil.rmtree(target, ignore_errors=True)
    local_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.copying-", dir=local_root))
    try:
        shutil.copytree(source, staging / "dataset", ignore=shutil.ignore_patterns(*HUB_CLIENT_FILES))
        (staging / "dataset").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    say(f"copied {location} to local disk ({size / 2**20:.0f} MiB in {time.perf_counter() - started:.1f}s)")
    return target


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


def planned_fold_result(run_folder: str, fold: Fold, candidate: str = "") -> FoldResult | None:
    """The result in a planned fold's folder, as a failed fold when it is unreadable or not this fold's.

    Never averaged in: a corrupted file, or a result whose episodes are not the plan's for this fold
    (a folder copied from another run), counts as a failed fold whose error says what was found.
    ``candidate`` is the candidate's folder in a run that compares several (``candidates.folder_key``).
    """
    folder = storage.resolve(fold_folder(run_folder, fold.fold_id, candidate))
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


def _with_last_progress(run_folder: str, failed: FailedFold, key: str = "") -> FailedFold:
    """A failed fold with the last progress line it wrote (``progress.json``): how far it got.

    ``key`` is the candidate's folder (``folder_key``), empty in a run of one candidate.
    """
    last = read_progress(storage.resolve(fold_folder(run_folder, failed.fold_id, key)))
    return failed if last is None else dataclasses.replace(failed, last_progress=last.line())


def aggregate(
    run_folder: str,
    plan: dict[str, Any],
    aggregation: dict[str, Any] | None = None,
    run_id: str | None = None,
    fold_results: Sequence[dict[str, Any] | None] | None = None,
    selection: dict[str, Any] | None = None,
    refit_result: dict[str, Any] | None = None,
    say: Progress = progress,
) -> dict[str, Any]:
    """Summarize a run from the fold folders in storage and write the summary files and report.

    ``fold_results`` are the results the orchestrator received (Airflow: the mapped folds' XComs).
    When given, only those folds count as succeeded, so a fold a user stopped is not counted because
    its call wrote a result anyway; the full results are still read from storage.
    Every fold of the plan counts: one without a result is a failed fold, never silently dropped;
    ``min_successful_folds`` in ``aggregation`` decides whether the summary may still be given
    (``NotEnoughFoldsError`` otherwise), for every candidate. With several candidates (``selection``:
    the run's ``SelectionSettings``) the summary is the chosen candidate's, with the comparison in it.
    ``refit_result`` (the refit's compact result) adds the final test. Writes ``plan.json``,
    ``summary.json``, ``folds.csv``, ``report.png`` and ``report.html`` into the run folder, and returns
    the summary without per-fold rows (small enough for XCom).
    """
    config = AggregateConfig(**(aggregation or {}))
    chooser = SelectionSettings(**(selection or {}))
    fold_plan = FoldPlan.from_dict(plan)
    run_dir = storage.resolve(run_folder)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_plan(run_folder, fold_plan)
    received = None
    if fold_results is not None:
        received = {
            (r.get("candidate") or "", int(r["fold_id"]))
            for r in fold_results
            if r and r.get("status") == "ok"
        }
    named = chooser.named_overrides()
    candidates = []
    for name, overrides in named:
        key = folder_key(name, len(named))
        where = f"candidate {name!r}: " if len(named) > 1 else ""
        results, summary = read_candidate(run_folder, fold_plan, key, config, received, run_id, where)
        candidates.append(CandidateFolds(name=name, overrides=overrides, summary=summary, results=results))
    summary = combine(candidates, config, chooser, named=bool(chooser.candidates or chooser.candidate_grid))
    if refit_result is not None:
        summary = dataclasses.replace(
            summary,
            final_test=final_test(run_folder, summary, refit_result, config),
            cost=paid_for(candidates, read_fold_result(storage.resolve(refit_folder(run_folder)), 0)),
        )
    paths = write_summary(summary, candidates, run_dir)
    done = sum(c.summary.totals.n_succeeded for c in candidates)
    of = f" of {len(candidates)} candidates (chose {summary.candidate})" if len(candidates) > 1 else ""
    say(f"aggregated {done}/{len(candidates) * fold_plan.num_folds} folds{of} -> {paths['summary_json']}")
    summary = dataclasses.replace(summary, run_folder=run_folder, outputs=paths)
    return summary.to_dict(include_folds=False)


def paid_for(candidates: Sequence[CandidateFolds], refit: FoldResult | None = None) -> RunCost | None:
    """The run's cost: every candidate's folds and the refit (the metrics are one candidate's; all of
    these calls were paid for)."""
    return run_cost([*(row for c in candidates for row in c.summary.folds), *([refit] if refit else [])])


def read_candidate(
    run_folder: str,
    fold_plan: FoldPlan,
    key: str,
    config: AggregateConfig,
    received: set[tuple[str, int]] | None,
    run_id: str | None,
    where: str = "",
) -> tuple[list[FoldResult], CVSummary]:
    """One candidate's fold results from storage and its summary; too few successful folds raise.

    ``key`` is the candidate's folder (``folder_key``); ``where`` prefixes the error of too few folds.
    """
    results = []
    for fold in fold_plan.folds:
        result = planned_fold_result(run_folder, fold, key)
        if received is not None and (key, fold.fold_id) not in received and result is not None and result.ok:
            result = FoldResult.failed(
                fold.fold_id,
                fold.repeat,
                fold.index,
                "the fold's task did not succeed in the orchestrator (failed, or stopped by a user)",
            )
        if result is not None:
            results.append(result)
    try:
        summary = summarize(results, config, expected_folds=fold_plan.num_folds, run_id=run_id)
    except NotEnoughFoldsError as exc:
        exc.args = (f"{where}{exc}",)
        raise
    summary = dataclasses.replace(
        summary,
        plan_hash=fold_plan.content_hash(),
        dataset={"repo_id": fold_plan.dataset.repo_id, "fingerprint": fold_plan.dataset.fingerprint},
        failed_folds=[_with_last_progress(run_folder, failed, key) for failed in summary.failed_folds],
    )
    return results, summary


def write_summary(summary: CVSummary, candidates: Sequence[CandidateFolds], out_dir: Path) -> dict[str, str]:
    """The summary files; with several candidates, folds.csv holds every candidate's folds."""
    by_name = {c.name: c.results for c in candidates}
    chosen = summary.candidate if len(candidates) > 1 else candidates[0].name
    return write_outputs(summary, by_name[chosen], out_dir, by_name if len(candidates) > 1 else None)


def combine(
    candidates: Sequence[CandidateFolds],
    config: AggregateConfig,
    chooser: SelectionSettings,
    named: bool = True,
) -> CVSummary:
    """The run's summary: one candidate's own, or the chosen one's with the comparison of them all."""
    correlation = rank_correlation(candidates)
    if len(candidates) == 1:
        only = candidates[0]
        return dataclasses.replace(
            only.summary, candidate=only.name if named else None, correlation=correlation
        )
    comparison = compare(
        candidates,
        metric=config.selection_metric,
        directions=METRIC_DIRECTIONS,
        confidence=float(config.confidence),
        baseline=chooser.baseline,
        tie_break=chooser.tie_break,
    )
    chosen = comparison.candidate(comparison.selection.chosen).summary
    return dataclasses.replace(
        chosen,
        candidate=comparison.selection.chosen,
        comparison=comparison,
        correlation=correlation,
        cost=paid_for(candidates),
    )


# Closed-loop test of a refit: rollout seeds of this stream were used neither in recording nor in
# selection (every fold rolls out from stream 0; see ``demo.evaluation_seeds``).
REFIT_SIM_SEED = 1


def plan_refit(
    settings: RunSettings,
    plan: FoldPlan,
    summary: dict[str, Any],
    run_folder: str,
    run_id: str | None,
    **execution: Any,
) -> FoldTrainingConfig:
    """The chosen candidate's training on every non-hold-out episode, validated once on the hold-out.

    Validation runs once, at the last step (``eval_every = steps``): the hold-out picks no checkpoint.
    Rollouts (simulator datasets, with a hold-out) start from seeds the selection never saw.
    """
    chosen = summary.get("candidate") or BASE_NAME
    candidates = {c.name: c for c in settings.candidates()}
    if chosen not in candidates:
        raise ValueError(
            f"the summary chose {chosen!r}, which is not a candidate of these settings: {sorted(candidates)}"
        )
    candidate = candidates[chosen]
    train = sorted({e for f in plan.folds if f.repeat == 0 for e in (*f.train_episodes, *f.val_episodes)})
    test = tuple(plan.holdout_episodes)
    fold = Fold(fold_id=0, repeat=0, index=0, train_episodes=tuple(train), val_episodes=test)
    config = candidate.settings.fold_config(
        fold,
        dataset_root=plan.dataset.root or "",
        repo_id=plan.dataset.repo_id,
        output_dir=refit_folder(run_folder),
        run_id=run_id,
        dataset_fingerprint=plan.dataset.fingerprint,
        candidate=chosen if summary.get("candidate") else "",
        final_fit=True,
        **execution,
    )
    return dataclasses.replace(
        config,
        eval_every=config.steps,
        sim_eval_episodes=config.sim_eval_episodes if test else 0,
        sim_eval_seed=REFIT_SIM_SEED,
    )


def final_test(
    run_folder: str, summary: CVSummary, refit_result: dict[str, Any], config: AggregateConfig
) -> FinalTest:
    """The refit's result from storage as the run's final test; the model to ship is its last checkpoint."""
    folder = refit_folder(run_folder)
    result = read_fold_result(storage.resolve(folder), 0)
    if result is None or not result.ok or refit_result.get("status") != "ok":
        error = (result.error if result is not None else None) or refit_result.get("error") or "no result"
        raise ValueError(
            f"the refit of {summary.candidate or BASE_NAME} did not succeed ({error}); see {folder}"
        )
    counts = rollout_counts(result)
    step_dir = Path(result.checkpoints.get("last", "")).name
    tested = bool(result.val_episodes)
    name = summary.candidate or BASE_NAME
    if tested:
        note = (
            f"the estimate to quote: {name} refit on all {len(result.train_episodes or [])} non-hold-out "
            f"episodes and tested once on {len(result.val_episodes or [])} hold-out episodes that no "
            "training or choice saw"
        )
    else:
        note = (
            f"no hold-out was planned, so nothing was tested after the choice: quote the cross-validated "
            f"estimate of {name}, optimistic by the selection. The refit is the model to ship."
        )
    return FinalTest(
        candidate=name,
        n_train_episodes=len(result.train_episodes or []),
        n_test_episodes=len(result.val_episodes or []),
        metrics=dict(result.metrics),
        success=None if counts is None else wilson(*counts, float(config.confidence)),
        sim_seed=REFIT_SIM_SEED if counts is not None else None,
        model_path=f"{folder}/checkpoints/{step_dir}/pretrained_model",
        result_file=f"{folder}/{RESULT_FILE}",
        note=note,
    )


def compare_runs(
    run_folders: Sequence[str],
    output_dir: str,
    aggregation: dict[str, Any] | None = None,
    selection: dict[str, Any] | None = None,
    say: Progress = progress,
) -> dict[str, Any]:
    """Compare the candidates of finished runs that share one fold plan, as one run compares its own.

    Each run's candidates keep their names, prefixed with the run folder's name when a run has several
    (``runA.chunk10``). Runs of different plans (dataset, split or seed) are refused: their folds do not
    pair. Writes the comparison's summary files into ``output_dir`` and returns the summary.
    """
    config = AggregateConfig(**(aggregation or {}))
    chooser = SelectionSettings(**(selection or {}))
    plans: dict[str, FoldPlan] = {}
    candidates: list[CandidateFolds] = []
    for folder in run_folders:
        run_dir = storage.resolve(folder)
        plans[folder] = _finished_plan(run_dir)
        named = _run_candidates(run_dir)
        for name, overrides in named:
            label = storage.safe_name(run_dir.name) + (f".{name}" if len(named) > 1 else "")
            if any(c.name == label for c in candidates):
                raise ValueError(
                    f"two compared candidates are named {label!r}: give the run folders distinct names"
                )
            key = folder_key(name, len(named))
            results, summary = read_candidate(
                str(run_dir), plans[folder], key, config, None, label, f"{label}: "
            )
            candidates.append(
                CandidateFolds(name=label, overrides=overrides, summary=summary, results=results)
            )
    hashes = {folder: plan.content_hash() for folder, plan in plans.items()}
    if len(set(hashes.values())) > 1:
        listed = ", ".join(f"{folder} ({h[:12]})" for folder, h in hashes.items())
        raise ValueError(
            f"the runs have different fold plans: {listed}. Paired comparisons need the same folds: rerun "
            "with the same dataset and split settings (k, seed, shuffle, repeats, hold-out)"
        )
    if len(candidates) < 2:
        raise ValueError(f"compare needs at least two candidates; {list(run_folders)} hold {len(candidates)}")
    if chooser.baseline and chooser.baseline not in {c.name for c in candidates}:
        raise ValueError(f"baseline {chooser.baseline!r} is not one of {[c.name for c in candidates]}")
    summary = combine(candidates, config, chooser)
    out_dir = storage.resolve(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record_plan(str(out_dir), next(iter(plans.values())))
    paths = write_summary(summary, candidates, out_dir)
    say(f"compared {len(candidates)} candidates of {len(run_folders)} runs -> {paths['summary_json']}")
    return dataclasses.replace(summary, run_folder=output_dir, outputs=paths).to_dict()


def _finished_plan(run_dir: Path) -> FoldPlan:
    for name in (PLAN_FILE, "summary.json"):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir} is not a finished run (no {name}): run it to the end first")
    return read_plan(run_dir / PLAN_FILE)


def _run_candidates(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """The candidates of a finished run, from its summary.json, in the order they were given."""
    path = run_dir / "summary.json"
    summary = CVSummary.from_dict(json.loads(path.read_text()), source=path)
    if summary.comparison is not None:
        return [(c.name, c.overrides) for c in summary.comparison.candidates]
    return [(summary.candidate or BASE_NAME, {})]
