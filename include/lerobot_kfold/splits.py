"""Plan k-fold splits over a LeRobot dataset's episodes, and record the plan as a hashed JSON manifest.

Why episodes and never frames: consecutive frames of one episode are nearly identical, so a frame-level
split puts near-copies of every validation frame into training and the validation loss says nothing
about unseen demonstrations. Every split here assigns whole episodes.

How the folds are drawn:

- Episodes are first sorted by ``episode_index``, so the plan depends on the *set* of episodes and the
  config, never on the order a caller happened to list them in.
- An optional hold-out test set is drawn once, from its own random stream, and excluded from every fold.
  It does not depend on ``k``, ``shuffle`` or ``repeats``, so changing those keeps the same test set.
- Plain folds are scikit-learn's ``KFold``; the plain hold-out is ``train_test_split``.
- Stratified folds (``stratify_by_task``) use the allocation rule of scikit-learn's ``StratifiedKFold``
  (round robin over episodes sorted by task, so each task's count in a fold is the floor or ceiling of
  its share and fold sizes differ by at most one), written as one vectorized pass. ``StratifiedKFold``
  itself compares the whole label array once per task: measured 3.6 s for 1e6 episodes with 1e4 tasks,
  and 0.25 s even with 10 tasks. Unshuffled, the folds here are exactly ``StratifiedKFold``'s; with a
  single task they are exactly the plain folds. The stratified hold-out gives each task its
  largest-remainder share of the hold-out size (``train_test_split(stratify=...)`` took 0.3 s at 1e6).
- Each repeat shuffles with its own seed derived from ``seed`` (``numpy.random.SeedSequence``), so repeat
  ``r`` is the same whatever the total number of repeats. Shuffles use the legacy ``RandomState``, whose
  streams numpy keeps stable across releases.

The plan is saved as a JSON manifest (dataset identity, config, hold-out, folds with their episodes and
per-task counts) with a sha256 content hash. The manifest, not re-planning, is the record of a run: a
fold-training task reads its episodes from it, and a tampered or truncated manifest is refused on load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lerobot_kfold.atomic_io import write_text_atomic
from lerobot_kfold.declared import check_declared, setting

# Airflow's default `core.max_map_length`: one mapped task instance per fold, so k * repeats must fit.
MAX_MAP_LENGTH = 1024
# Seeds are numpy seeds: below 2**32.
MAX_SEED = 2**32 - 1
# Bumped whenever the manifest layout changes; readers refuse versions they do not know.
# 2: the dataset identity records a format conversion (converted_from).
FORMAT_VERSION = 2
# Identifies the file type to a person (or tool) that opens the manifest.
MANIFEST_KIND = "lerobot_kfold.fold_plan"

# Random streams derived from the seed: the hold-out uses one, repeat r uses _FOLD_STREAM + r.
_HOLDOUT_STREAM = 0
_FOLD_STREAM = 1

TaskCounts = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class EpisodeInfo:
    """One episode as the planner sees it.

    Not validated on construction, so building a million of them stays cheap; ``plan_folds`` checks
    them all at once.
    """

    # `episode_index` in the LeRobot dataset.
    index: int
    # Task string of the episode (its first task when it has several).
    task: str
    # Number of frames.
    length: int


@dataclass(frozen=True, eq=False)
class EpisodeTable:
    """Episodes as parallel arrays: the fast input for large datasets.

    ``plan_folds`` accepts this or a sequence of ``EpisodeInfo``. Building the table straight from
    columns (e.g. LeRobot's ``meta/episodes`` parquet) avoids one Python object per episode.
    """

    # Episode indices (integers >= 0, unique). Stored as an int64 array.
    index: np.ndarray | Sequence[int]
    # Task string per episode, same length as `index`. Stored as an object array.
    task: np.ndarray | Sequence[str]
    # Frames per episode (integers >= 0), or None when unknown (the manifest then has no frame counts).
    length: np.ndarray | Sequence[int] | None = None

    def __post_init__(self) -> None:
        index = np.asarray(self.index)
        if index.ndim != 1:
            raise ValueError(f"EpisodeTable.index must be one-dimensional, got shape {index.shape}.")
        if index.size and not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"EpisodeTable.index must hold integers, got dtype {index.dtype}.")
        index = index.astype(np.int64, copy=False)
        if index.size and index.min() < 0:
            raise ValueError(
                f"episode indices must be >= 0, got {int(index.min())}: pass LeRobot's episode_index values."
            )
        task = self.task
        if not (isinstance(task, np.ndarray) and task.dtype == object and task.ndim == 1):
            # fromiter keeps a sequence of lists one-dimensional, where np.asarray would make it 2-D.
            task = np.fromiter(task, dtype=object, count=len(task))
        if len(task) != len(index):
            raise ValueError(
                f"EpisodeTable.task has {len(task)} entries but index has {len(index)}: "
                "pass one task per episode."
            )
        length = self.length
        if length is not None:
            length = np.asarray(length)
            if length.shape != index.shape:
                raise ValueError(
                    f"EpisodeTable.length has shape {length.shape} but index has {index.shape}: "
                    "pass one length per episode, or None."
                )
            if length.size and not np.issubdtype(length.dtype, np.integer):
                raise ValueError(f"EpisodeTable.length must hold integers, got dtype {length.dtype}.")
            length = length.astype(np.int64, copy=False)
            if length.size and length.min() < 0:
                raise ValueError(f"episode lengths must be >= 0, got {int(length.min())}.")
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "length", length)

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def from_infos(cls, episodes: Sequence[EpisodeInfo]) -> EpisodeTable:
        """Convert ``EpisodeInfo`` objects to parallel arrays (the one per-episode Python loop)."""
        try:
            index = [e.index for e in episodes]
            task = [e.task for e in episodes]
            length = [e.length for e in episodes]
        except AttributeError as err:
            raise ValueError(
                f"episodes must be EpisodeInfo(index: int, task: str, length: int) objects: {err}"
            ) from err
        # np.asarray infers the dtype, so a float or string index is refused instead of truncated.
        return cls(index=np.asarray(index), task=task, length=np.asarray(length))


@dataclass(frozen=True)
class DatasetIdentity:
    """Which dataset a plan belongs to, so a manifest cannot silently be used with another one."""

    # Hugging Face style repo id of the LeRobot dataset, e.g. "lerobot/so101_pick_place".
    repo_id: str
    # Local root folder of the dataset, if it was read from disk.
    root: str | None = None
    # Optional content fingerprint (e.g. a hash of meta/info.json and the episodes table).
    fingerprint: str | None = None
    # Number of episodes in the dataset; 0 means unknown, and plan_folds fills in the count it planned.
    num_episodes: int = 0
    # The dataset this copy was converted from (LeRobot v2.1 -> v3.0): source_root, source_version,
    # converter. None when the dataset was used as it is.
    converted_from: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.repo_id, str) or not self.repo_id:
            raise ValueError(
                f"repo_id must be a non-empty string such as 'user/dataset', got {self.repo_id!r}."
            )
        if self.root is not None and not isinstance(self.root, str):
            raise ValueError(f"root must be a string path or None, got {type(self.root).__name__}.")
        if self.fingerprint is not None and not isinstance(self.fingerprint, str):
            raise ValueError(f"fingerprint must be a string or None, got {type(self.fingerprint).__name__}.")
        if self.converted_from is not None and not isinstance(self.converted_from, dict):
            raise ValueError(
                f"converted_from must be a mapping or None, got {type(self.converted_from).__name__}."
            )
        object.__setattr__(self, "num_episodes", _as_int("num_episodes", self.num_episodes))
        if self.num_episodes < 0:
            raise ValueError(f"num_episodes must be >= 0 (0 = unknown), got {self.num_episodes}.")


@dataclass(frozen=True)
class SplitConfig:
    """How to split. Validated on construction, so a bad DAG parameter fails before any work starts.

    Each field is a declared run setting (see ``declared``): the CLI options and the trigger form's
    fields of fold planning are derived from these declarations.
    """

    # Folds per repeat. Each fold validates on about 1/k of the usable episodes; one mapped task each.
    k: int = setting(5, "Number of folds.", minimum=2, maximum=MAX_MAP_LENGTH)
    # Same seed, same episodes: same plan. Training uses the same seed (weights, data order, dropout).
    seed: int = setting(0, "Seed of the episode shuffle and of training.", minimum=0, maximum=MAX_SEED)
    # Without it folds are contiguous runs of episode_index, which tests generalization across
    # recording sessions. The hold-out is always a seeded random draw.
    shuffle: bool = setting(True, "Shuffle episodes before assigning folds (off: contiguous folds).")
    # Every task needs >= k usable episodes.
    stratify_by_task: bool = setting(False, "Keep each task's share of episodes in every fold.")
    # The same test set for every repeat; with stratify_by_task it is stratified too.
    holdout_fraction: float = setting(
        0.0, "Share of episodes held out of every fold as a final test set (0: none).", minimum=0, below=0.5
    )
    # Repeated k-fold: independent reshuffles, each giving k folds (needs shuffle).
    repeats: int = setting(
        1, "Repeated k-fold: k x repeats fold tasks, each repeat reshuffled.", minimum=1, maximum=100
    )

    def __post_init__(self) -> None:
        check_declared(self)
        if self.repeats > 1 and not self.shuffle:
            raise ValueError(
                f"repeats={self.repeats} needs shuffle=True: unshuffled repeats would all give the same "
                "folds. Set shuffle=True or repeats=1."
            )
        if self.k * self.repeats > MAX_MAP_LENGTH:
            raise ValueError(
                f"k * repeats = {self.k} * {self.repeats} = {self.k * self.repeats} folds exceeds "
                f"{MAX_MAP_LENGTH}, Airflow's core.max_map_length (each fold is one mapped task "
                "instance). Lower k or repeats."
            )

    @property
    def num_folds(self) -> int:
        """Folds in the whole plan: k per repeat."""
        return self.k * self.repeats


@dataclass(frozen=True)
class Fold:
    """One train/validation split: what one fold-training task trains and validates on."""

    # Position in the plan, 0 .. k * repeats - 1 (= repeat * k + index).
    fold_id: int
    # Which repeat the fold belongs to, 0 .. repeats - 1.
    repeat: int
    # Position within its repeat, 0 .. k - 1.
    index: int
    # Episodes to train on, sorted.
    train_episodes: tuple[int, ...]
    # Episodes to validate on, sorted.
    val_episodes: tuple[int, ...]
    # (task, episode count) pairs sorted by task, tasks with no episode left out.
    train_task_counts: TaskCounts = ()
    val_task_counts: TaskCounts = ()
    # Total frames of the train / validation episodes; None when episode lengths were not given.
    train_frames: int | None = None
    val_frames: int | None = None


@dataclass(frozen=True)
class FoldPlan:
    """A complete, reproducible split plan: hold-out plus k folds per repeat."""

    # The dataset the episode indices refer to.
    dataset: DatasetIdentity
    # The config that produced the plan.
    config: SplitConfig
    # Test episodes excluded from every fold, sorted (empty without a hold-out).
    holdout_episodes: tuple[int, ...]
    # All folds, ordered by fold_id.
    folds: tuple[Fold, ...]
    # (task, count) pairs of the hold-out, sorted by task.
    holdout_task_counts: TaskCounts = ()
    # Total frames of the hold-out; None when episode lengths were not given.
    holdout_frames: int | None = None

    def __post_init__(self) -> None:
        k = self.config.k
        if len(self.folds) != self.config.num_folds:
            raise ValueError(
                f"a plan with k={k} and repeats={self.config.repeats} needs {self.config.num_folds} "
                f"folds, got {len(self.folds)}."
            )
        for position, fold in enumerate(self.folds):
            expected = (position, position // k, position % k)
            if (fold.fold_id, fold.repeat, fold.index) != expected:
                raise ValueError(
                    f"fold at position {position} must have (fold_id, repeat, index) = {expected}, got "
                    f"{(fold.fold_id, fold.repeat, fold.index)}."
                )

    @property
    def num_folds(self) -> int:
        return len(self.folds)

    def fold(self, fold_id: int) -> Fold:
        """The fold with this id (what a mapped fold-training task asks for)."""
        fold_id = _as_int("fold_id", fold_id)
        if not 0 <= fold_id < len(self.folds):
            raise ValueError(
                f"fold_id {fold_id} is out of range: this plan has {len(self.folds)} folds "
                f"(0..{len(self.folds) - 1})."
            )
        return self.folds[fold_id]

    def _body(self) -> dict[str, Any]:
        """Everything the hash covers: the manifest without its ``content_hash``."""
        return {
            "kind": MANIFEST_KIND,
            "format_version": FORMAT_VERSION,
            "dataset": dataclasses.asdict(self.dataset),
            "config": dataclasses.asdict(self.config),
            "holdout": {
                "num_episodes": len(self.holdout_episodes),
                "frames": self.holdout_frames,
                "task_counts": dict(self.holdout_task_counts),
                "episodes": list(self.holdout_episodes),
            },
            "folds": [
                {
                    "fold_id": f.fold_id,
                    "repeat": f.repeat,
                    "index": f.index,
                    "num_train": len(f.train_episodes),
                    "num_val": len(f.val_episodes),
                    "train_frames": f.train_frames,
                    "val_frames": f.val_frames,
                    "train_task_counts": dict(f.train_task_counts),
                    "val_task_counts": dict(f.val_task_counts),
                    "train_episodes": list(f.train_episodes),
                    "val_episodes": list(f.val_episodes),
                }
                for f in self.folds
            ],
        }

    def content_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of the manifest without its hash."""
        return _hash_body(self._body())

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON types, with ``format_version`` and ``content_hash``."""
        body = self._body()
        return {**body, "content_hash": _hash_body(body)}

    def to_json(self) -> str:
        """The manifest as indented JSON; episode lists stay on one line each."""
        return _format_json(self.to_dict()) + "\n"

    @classmethod
    def from_dict(cls, manifest: dict[str, Any]) -> FoldPlan:
        """Rebuild a plan from ``to_dict`` output; refuses edited, truncated or inconsistent manifests."""
        if not isinstance(manifest, dict):
            raise ValueError(f"a fold plan manifest must be a JSON object, got {type(manifest).__name__}.")
        body = {key: value for key, value in manifest.items() if key != "content_hash"}
        stated = manifest.get("content_hash")
        if not isinstance(stated, str):
            raise ValueError("the manifest has no content_hash: write it with FoldPlan.to_json / write_plan.")
        if body.get("kind") != MANIFEST_KIND:
            raise ValueError(
                f"not a fold plan manifest: kind is {body.get('kind')!r}, expected {MANIFEST_KIND!r}."
            )
        if body.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"unsupported manifest format_version {body.get('format_version')!r}; this version of "
                f"lerobot_kfold reads {FORMAT_VERSION}. Re-plan with this version."
            )
        actual = _hash_body(body)
        if actual != stated:
            raise ValueError(
                f"manifest content hash mismatch (stated {stated}, computed {actual}): the manifest was "
                "edited or corrupted. Re-plan with plan_folds instead of editing a manifest."
            )
        try:
            plan = _plan_from_body(body)
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed fold plan manifest: {err!r}") from err
        _check_partition(plan)
        return plan

    @classmethod
    def from_json(cls, text: str) -> FoldPlan:
        """Parse and verify a manifest written by ``to_json``."""
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"the fold plan manifest is not valid JSON: {err}") from err
        return cls.from_dict(manifest)


def plan_folds(
    episodes: Sequence[EpisodeInfo] | EpisodeTable, config: SplitConfig, dataset: DatasetIdentity
) -> FoldPlan:
    """Split ``episodes`` into a hold-out and ``config.k`` folds per repeat.

    Deterministic: the same set of episodes (in any order), config and dataset give an equal plan.
    Every episode outside the hold-out is in exactly one validation fold per repeat and in the training
    set of the other k - 1 folds; fold sizes differ by at most one. With ``stratify_by_task`` each task's
    count in a validation fold is the floor or ceiling of (its usable episodes / k).

    Raises ``ValueError`` for an empty or duplicated episode list, a hold-out that leaves fewer than k
    episodes, or (when stratifying) a task with fewer than k episodes outside the hold-out.
    """
    table = episodes if isinstance(episodes, EpisodeTable) else EpisodeTable.from_infos(episodes)
    n = len(table)
    if n == 0:
        raise ValueError(f"no episodes given: k-fold needs at least k={config.k} episodes.")
    index, codes, names, lengths = _canonical(table)
    # The hold-out size follows train_test_split: ceil(fraction * n).
    n_holdout = math.ceil(config.holdout_fraction * n)
    _check_k_fits(config, n, n_holdout)
    holdout = _draw_holdout(codes, n_holdout, config)
    usable = np.ones(n, dtype=bool)
    usable[holdout] = False
    if config.stratify_by_task:
        _check_task_counts(codes[usable], names, config, n_held_out=len(holdout))

    summarize = _Summarizer(codes, names, lengths)
    folds = [
        fold
        for repeat in range(config.repeats)
        for fold in _repeat_folds(repeat, config, index, codes, usable, summarize)
    ]
    holdout_counts, holdout_frames = summarize(holdout)
    if dataset.num_episodes == 0:
        dataset = dataclasses.replace(dataset, num_episodes=n)
    return FoldPlan(
        dataset=dataset,
        config=config,
        holdout_episodes=tuple(index[holdout].tolist()),
        folds=tuple(folds),
        holdout_task_counts=holdout_counts,
        holdout_frames=holdout_frames,
    )


def _canonical(table: EpisodeTable) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """Episode indices, task codes, task names and lengths in episode-index order (duplicates refused).

    Sorting first means the caller's ordering never changes the plan.
    """
    order = np.argsort(table.index, kind="stable")
    index = table.index[order]
    repeated = index[1:][index[1:] == index[:-1]]
    if repeated.size:
        shown = np.unique(repeated)
        raise ValueError(
            f"duplicate episode indices: {_preview(shown.tolist())} appear more than once. "
            "Pass each episode once."
        )
    codes, names = _factorize(table.task[order])
    lengths = None if table.length is None else table.length[order]
    return index, codes, names, lengths


def _check_k_fits(config: SplitConfig, n: int, n_holdout: int) -> None:
    n_usable = n - n_holdout
    if config.k > n_usable and n_holdout == 0:
        raise ValueError(
            f"k={config.k} is greater than the number of episodes ({n}): each fold needs at least one "
            "validation episode. Lower k or use more episodes."
        )
    if config.k > n_usable:
        raise ValueError(
            f"k={config.k} is greater than the number of usable episodes ({n_usable}: {n} episodes "
            f"minus {n_holdout} held out by holdout_fraction={config.holdout_fraction}). Lower k or "
            "holdout_fraction, or use more episodes."
        )


def _repeat_folds(
    repeat: int,
    config: SplitConfig,
    index: np.ndarray,
    codes: np.ndarray,
    usable: np.ndarray,
    summarize: _Summarizer,
) -> list[Fold]:
    """The k folds of one repeat, over the usable (not held-out) episodes."""
    usable_positions = np.flatnonzero(usable)
    seed = _stream_seed(config.seed, _FOLD_STREAM + repeat) if config.shuffle else None
    if config.stratify_by_task:
        assignment = _stratified_assignment(codes[usable], config.k, seed)
    else:
        assignment = _plain_assignment(len(usable_positions), config.k, seed)
    folds = []
    for fold_index in range(config.k):
        val = usable_positions[assignment == fold_index]
        train = usable_positions[assignment != fold_index]
        train_counts, train_frames = summarize(train)
        val_counts, val_frames = summarize(val)
        folds.append(
            Fold(
                fold_id=repeat * config.k + fold_index,
                repeat=repeat,
                index=fold_index,
                train_episodes=tuple(index[train].tolist()),
                val_episodes=tuple(index[val].tolist()),
                train_task_counts=train_counts,
                val_task_counts=val_counts,
                train_frames=train_frames,
                val_frames=val_frames,
            )
        )
    return folds


def write_plan(plan: FoldPlan, path: str | os.PathLike[str]) -> Path:
    """Write the manifest atomically: readers see the old file or the new one, never half of one."""
    return write_text_atomic(path, plan.to_json())


def read_plan(path: str | os.PathLike[str]) -> FoldPlan:
    """Read and verify a manifest written by ``write_plan``."""
    return FoldPlan.from_json(Path(path).read_text(encoding="utf-8"))


# --- planning internals -------------------------------------------------------------------------------


def _stream_seed(seed: int, stream: int) -> int:
    """An independent 32-bit seed per random stream (hold-out, each repeat), stable across numpy versions."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _factorize(tasks: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Task strings -> integer codes numbered by first appearance (as StratifiedKFold numbers classes)."""
    values = tasks.tolist()
    try:
        names = list(dict.fromkeys(values))  # unique, in order of first appearance; C-speed loop
    except TypeError as err:  # an unhashable task, e.g. LeRobot's list of tasks per episode
        raise ValueError(
            f"every episode task must be a string (pass the episode's first task): {err}"
        ) from err
    bad = [repr(name) for name in names if not isinstance(name, str)]
    if bad:
        raise ValueError(f"every episode task must be a string, got {_preview(bad)}.")
    code_of = {name: code for code, name in enumerate(names)}
    codes = np.fromiter(map(code_of.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, names


def _draw_holdout(codes: np.ndarray, n_test: int, config: SplitConfig) -> np.ndarray:
    """Sorted positions of ``n_test`` hold-out episodes, drawn from the hold-out's own random stream."""
    n = len(codes)
    if n_test == 0:
        return np.empty(0, dtype=np.int64)
    seed = _stream_seed(config.seed, _HOLDOUT_STREAM)
    if not config.stratify_by_task:
        from sklearn.model_selection import train_test_split  # lazily: DAG files import this module

        _, test = train_test_split(np.arange(n), test_size=n_test, random_state=seed, shuffle=True)
        return np.sort(test)

    # Largest-remainder apportionment of n_test over tasks, in exact integer arithmetic; ties go to the
    # task that appears first. Each task then gives up that many of its episodes, chosen at random.
    counts = np.bincount(codes)
    quota, remainder = np.divmod(n_test * counts, n)
    extra = n_test - int(quota.sum())
    quota[np.lexsort((np.arange(len(counts)), -remainder))[:extra]] += 1
    permutation = np.random.RandomState(seed).permutation(n)
    order = permutation[np.argsort(codes[permutation], kind="stable")]
    starts = np.cumsum(counts) - counts
    rank_in_task = np.arange(n) - starts[codes[order]]
    return np.sort(order[rank_in_task < quota[codes[order]]])


def _check_task_counts(codes: np.ndarray, names: list[str], config: SplitConfig, n_held_out: int) -> None:
    """Stratification needs every task in every validation fold, so >= k usable episodes per task."""
    counts = np.bincount(codes, minlength=len(names))
    short = np.flatnonzero(counts < config.k)
    if not short.size:
        return
    described = [f"{names[c]!r} has {int(counts[c])}" for c in short]
    after = f" after the hold-out took {n_held_out}" if n_held_out else ""
    raise ValueError(
        f"stratify_by_task=True needs at least k={config.k} usable episodes per task{after}, but "
        f"{len(short)} task(s) have fewer: {_preview(described)}. Lower k or holdout_fraction, record "
        "more episodes of these tasks, or set stratify_by_task=False."
    )


def _plain_assignment(n: int, k: int, seed: int | None) -> np.ndarray:
    """Fold number of each usable episode, from scikit-learn's KFold (sizes differ by at most one)."""
    from sklearn.model_selection import KFold

    assignment = np.empty(n, dtype=np.int64)
    splitter = KFold(n_splits=k, shuffle=seed is not None, random_state=seed)
    for fold_index, (_, val) in enumerate(splitter.split(np.arange(n))):
        assignment[val] = fold_index
    return assignment


def _stratified_assignment(codes: np.ndarray, k: int, seed: int | None) -> np.ndarray:
    """Fold number of each usable episode, with StratifiedKFold's allocation in one vectorized pass.

    Sort the episodes by task (randomly within a task when shuffling). Position p of that order counts
    towards fold p % k: so each task's count per fold is the floor or ceiling of its count / k, and fold
    sizes differ by at most one. Within a task, the folds then take contiguous blocks of that order in
    fold order, exactly as StratifiedKFold does unshuffled.
    """
    n = len(codes)
    if seed is None:
        order = np.argsort(codes, kind="stable")
    else:
        permutation = np.random.RandomState(seed).permutation(n)
        order = permutation[np.argsort(codes[permutation], kind="stable")]
    counts = np.bincount(codes)
    ends = np.cumsum(counts)
    starts = ends - counts
    fold = np.arange(k)[:, None]

    def positions_before(x: np.ndarray) -> np.ndarray:
        # How many positions p < x have p % k == fold.
        return (x - fold + k - 1) // k

    allocation = positions_before(ends) - positions_before(starts)  # (k, tasks)
    labels = np.repeat(np.tile(np.arange(k), len(counts)), allocation.T.ravel())
    assignment = np.empty(n, dtype=np.int64)
    assignment[order] = labels
    return assignment


class _Summarizer:
    """Per-task episode counts and total frames of a set of episode positions (for the manifest)."""

    def __init__(self, codes: np.ndarray, names: list[str], lengths: np.ndarray | None) -> None:
        self.codes = codes
        self.lengths = lengths
        self.names = np.array(names, dtype=object)
        self.by_name = np.argsort(self.names, kind="stable")

    def __call__(self, positions: np.ndarray) -> tuple[TaskCounts, int | None]:
        counts = np.bincount(self.codes[positions], minlength=len(self.names))
        present = self.by_name[counts[self.by_name] > 0]
        task_counts = tuple(zip(self.names[present].tolist(), counts[present].tolist(), strict=True))
        frames = None if self.lengths is None else int(self.lengths[positions].sum())
        return task_counts, frames


# --- manifest internals -------------------------------------------------------------------------------


def _hash_body(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _format_json(value: Any, depth: int = 0) -> str:
    """Like ``json.dumps(indent=2)``, but a list of numbers stays on one line (it may hold 1e6 of them)."""
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(key)}: {_format_json(item, depth + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and isinstance(value[0], dict | list):
        items = [inner + _format_json(item, depth + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, separators=(", ", ": "), allow_nan=False)


def _plan_from_body(body: dict[str, Any]) -> FoldPlan:
    _expect_keys(body, {"kind", "format_version", "dataset", "config", "holdout", "folds"}, "manifest")
    dataset = DatasetIdentity(**_exact_fields(body["dataset"], DatasetIdentity, "dataset"))
    config = SplitConfig(**_exact_fields(body["config"], SplitConfig, "config"))
    holdout = body["holdout"]
    _expect_keys(holdout, {"num_episodes", "frames", "task_counts", "episodes"}, "holdout")
    holdout_episodes = _episodes(holdout["episodes"], holdout["num_episodes"], "holdout")
    folds = []
    for entry in body["folds"]:
        _expect_keys(entry, {f.name for f in dataclasses.fields(Fold)} | {"num_train", "num_val"}, "fold")
        where = f"fold {entry['fold_id']}"
        folds.append(
            Fold(
                fold_id=entry["fold_id"],
                repeat=entry["repeat"],
                index=entry["index"],
                train_episodes=_episodes(entry["train_episodes"], entry["num_train"], where),
                val_episodes=_episodes(entry["val_episodes"], entry["num_val"], where),
                train_task_counts=_task_counts(entry["train_task_counts"], entry["num_train"], where),
                val_task_counts=_task_counts(entry["val_task_counts"], entry["num_val"], where),
                train_frames=entry["train_frames"],
                val_frames=entry["val_frames"],
            )
        )
    return FoldPlan(
        dataset=dataset,
        config=config,
        holdout_episodes=holdout_episodes,
        folds=tuple(folds),
        holdout_task_counts=_task_counts(holdout["task_counts"], holdout["num_episodes"], "holdout"),
        holdout_frames=holdout["frames"],
    )


def _expect_keys(mapping: dict[str, Any], keys: set[str], where: str) -> None:
    if not isinstance(mapping, dict) or set(mapping) != keys:
        found = sorted(mapping) if isinstance(mapping, dict) else type(mapping).__name__
        raise ValueError(f"malformed fold plan manifest: {where} must have keys {sorted(keys)}, got {found}.")


def _exact_fields(mapping: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    _expect_keys(mapping, {f.name for f in dataclasses.fields(cls)}, where)
    return mapping


def _episodes(values: list[int], stated: int, where: str) -> tuple[int, ...]:
    if len(values) != stated:
        raise ValueError(
            f"malformed fold plan manifest: {where} lists {len(values)} episodes but says {stated}."
        )
    return tuple(values)


def _task_counts(counts: dict[str, int], total: int, where: str) -> TaskCounts:
    if sum(counts.values()) != total:
        raise ValueError(
            f"malformed fold plan manifest: {where} task counts add up to {sum(counts.values())}, "
            f"not {total}."
        )
    return tuple(sorted(counts.items()))


def _check_partition(plan: FoldPlan) -> None:
    """Refuse a manifest whose folds are not a partition (e.g. hand-edited with a recomputed hash).

    The usable episodes are those of fold 0 (train plus validation); every repeat's validation folds
    must cover them exactly once, and each fold must train on all the others.
    """
    k = plan.config.k
    holdout = np.asarray(plan.holdout_episodes, dtype=np.int64)
    if np.any(np.diff(holdout) <= 0):
        raise ValueError("malformed fold plan manifest: holdout episodes must be sorted and unique.")
    first = plan.folds[0]
    usable = np.union1d(np.asarray(first.train_episodes, dtype=np.int64), np.asarray(first.val_episodes))
    for repeat in range(plan.config.repeats):
        folds = plan.folds[repeat * k : (repeat + 1) * k]
        vals = [np.asarray(f.val_episodes, dtype=np.int64) for f in folds]
        if not np.array_equal(np.sort(np.concatenate(vals)), usable):
            raise ValueError(
                f"malformed fold plan manifest: the validation folds of repeat {repeat} do not cover "
                "the same episodes exactly once."
            )
        for fold, val in zip(folds, vals, strict=True):
            train = np.asarray(fold.train_episodes, dtype=np.int64)
            if np.any(np.diff(val) <= 0) or not np.array_equal(train, np.setdiff1d(usable, val)):
                raise ValueError(
                    f"malformed fold plan manifest: fold {fold.fold_id} must validate on sorted episodes "
                    "and train on every other usable episode, sorted."
                )
    if np.isin(holdout, usable).any():
        raise ValueError("malformed fold plan manifest: holdout episodes also appear in the folds.")


def _as_int(name: str, value: Any) -> int:
    """Accept Python and numpy integers (not bools or floats) and return a plain int for JSON."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}.") from None


def _preview(items: Sequence[Any], limit: int = 5) -> str:
    """First few items of a list for an error message, with how many more there are."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
