"""What fold planning and training need to know about a LeRobot dataset, read from its metadata only.

Why not just ``LeRobotDataset(repo_id, root=...)``: a wrong or missing root makes lerobot try the hub
(it fails after seconds and leaves an empty folder behind), and the per-episode statistics that
fold-correct normalization needs are dropped by lerobot's own episode loader. Everything here reads
``meta/`` directly, fails with a message that says what to fix, and never touches the network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from lerobot_kfold.splits import DatasetIdentity, EpisodeInfo

SUPPORTED_CODEBASE_VERSIONS = ("v3.0",)
STATS_PREFIX = "stats/"


class DatasetError(ValueError):
    """The dataset root or its contents cannot be used; the message says what to fix."""


def check_dataset_root(root: str | Path) -> Path:
    """Return ``root`` as a Path if it holds a LeRobot v3 dataset, else raise :class:`DatasetError`."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(
            f"dataset root {root} does not exist. Pass the folder that contains meta/info.json "
            "(record a demo dataset with 'python -m lerobot_kfold demo-dataset --root DIR')."
        )
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is a file; pass the dataset folder that contains meta/.")
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise DatasetError(
            f"{root} is not a LeRobot dataset: {info_path} is missing. Pass the folder that contains "
            "meta/info.json, data/ and meta/episodes/."
        )
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{info_path} is not valid JSON ({exc}); the dataset looks corrupted.") from exc
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise DatasetError(
            f"{info_path} is not a LeRobot info object (no 'features'); the dataset looks corrupted."
        )
    version = info.get("codebase_version")
    if version not in SUPPORTED_CODEBASE_VERSIONS:
        raise DatasetError(
            f"{root} has codebase_version {version!r}; lerobot 0.6 reads {SUPPORTED_CODEBASE_VERSIONS}. "
            "Convert it with lerobot's convert_dataset_v21_to_v30 script."
        )
    if not sorted((root / "meta" / "episodes").glob("*/*.parquet")):
        raise DatasetError(
            f"{root}/meta/episodes/ holds no parquet files: the dataset was not finalized "
            "(LeRobotDataset.finalize() must run after recording)."
        )
    return root


def check_dataset_files(root: str | Path) -> Path:
    """Every data and video file the episode table names is there, non-empty, and parquet files open.

    Why: lerobot reads these lazily, and a missing file makes it try the hub (failing on the offline
    flag, naming no file) after training has started. Checked from the metadata alone, in seconds.
    """
    root = check_dataset_root(root)
    info = read_info(root)
    table = load_episode_table(root)
    for path in sorted(_referenced_files(root, info, table)):
        if not path.is_file():
            raise DatasetError(
                f"{path} is missing: the dataset at {root} is incomplete (copy it again, or re-fetch it)."
            )
        if path.stat().st_size == 0:
            raise DatasetError(f"{path} is empty: the dataset at {root} is truncated (copy it again).")
        if path.suffix == ".parquet":
            try:
                pq.read_metadata(path)
            except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for truncated files
                raise DatasetError(
                    f"{path} is not a readable parquet file ({exc}); copy the dataset again."
                ) from exc
    return root


def _referenced_files(root: Path, info: dict[str, Any], table: pd.DataFrame) -> set[Path]:
    """The data files (and video files, for video features) of every episode, from info.json's templates."""
    files: set[Path] = set()
    templates = {"data": info.get("data_path")}
    if info.get("video_path"):
        for key, spec in info["features"].items():
            if spec.get("dtype") == "video":
                templates[f"videos/{key}"] = info["video_path"]
    for prefix, template in templates.items():
        chunk, file = f"{prefix}/chunk_index", f"{prefix}/file_index"
        if not template or chunk not in table or file not in table:
            continue
        video_key = prefix.removeprefix("videos/")
        for chunk_index, file_index in set(zip(table[chunk], table[file], strict=True)):
            relative = template.format(
                chunk_index=int(chunk_index), file_index=int(file_index), video_key=video_key
            )
            files.add(root / relative)
    return files


def read_info(root: str | Path) -> dict[str, Any]:
    """``meta/info.json`` of a checked dataset root."""
    return json.loads((check_dataset_root(root) / "meta" / "info.json").read_text())


def load_episode_table(root: str | Path) -> pd.DataFrame:
    """All rows of ``meta/episodes/*/*.parquet`` (including per-episode stats), sorted by episode index."""
    root = check_dataset_root(root)
    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    # pyarrow directly: pandas.read_parquet left a thread that aborted the process at a fast exit.
    table = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    return table.sort_values("episode_index", kind="stable").reset_index(drop=True)


def episode_infos(root: str | Path) -> list[EpisodeInfo]:
    """Episode index, first task and length of every episode: the input of fold planning."""
    table = load_episode_table(root)
    return [
        EpisodeInfo(index=int(index), task=str(tasks[0]) if len(tasks) else "", length=int(length))
        for index, tasks, length in zip(table["episode_index"], table["tasks"], table["length"], strict=True)
    ]


def fingerprint(root: str | Path) -> str:
    """A short content hash of the dataset's structure (info.json and the episode table).

    Why: a fold manifest must say *which* data it was planned on; re-recording a dataset under the
    same path changes the fingerprint, so an old manifest is not silently reused.
    """
    root = check_dataset_root(root)
    digest = hashlib.sha256()
    digest.update((root / "meta" / "info.json").read_bytes())
    table = load_episode_table(root)
    for index, tasks, length in zip(table["episode_index"], table["tasks"], table["length"], strict=True):
        digest.update(f"{int(index)}|{'|'.join(map(str, tasks))}|{int(length)}\n".encode())
    return digest.hexdigest()[:16]


def check_fingerprint(root: str | Path, expected: str | None) -> None:
    """The dataset at ``root`` is the one a plan was made from (when the plan recorded a fingerprint)."""
    if expected is None:
        return
    actual = fingerprint(root)
    if actual != expected:
        raise DatasetError(
            f"the dataset at {root} (fingerprint {actual}) is not the one the plan was made from "
            f"(fingerprint {expected}): its episodes or metadata differ. Re-plan on this dataset, or "
            "pass the dataset the plan names."
        )


def dataset_identity(root: str | Path, repo_id: str | None = None) -> DatasetIdentity:
    """Identity of a local dataset for the fold manifest."""
    root = check_dataset_root(root)
    info = read_info(root)
    return DatasetIdentity(
        repo_id=repo_id or f"local/{root.name}",
        root=str(root.resolve()),
        fingerprint=fingerprint(root),
        num_episodes=int(info["total_episodes"]),
    )


def _as_array(value: Any) -> np.ndarray:
    """Parquet stores nested stats (image stats are (3, 1, 1)) as object arrays of arrays."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return np.asarray([_as_array(v) for v in value])
    return np.asarray(value)


def episode_stats(root: str | Path, episodes: Sequence[int]) -> list[dict[str, dict[str, np.ndarray]]]:
    """Per-episode statistics, as lerobot computed them while recording, for the given episodes."""
    table = load_episode_table(root).set_index("episode_index")
    missing = sorted(set(episodes) - set(table.index))
    if missing:
        raise DatasetError(f"episodes {missing[:10]} are not in the dataset (it has {len(table)} episodes).")
    stat_columns = [c for c in table.columns if c.startswith(STATS_PREFIX)]
    if not stat_columns:
        raise DatasetError(
            "the dataset's meta/episodes/ has no per-episode stats columns; fold-correct normalization "
            "needs them (re-record or recompute stats with lerobot)."
        )
    result = []
    for episode in episodes:
        row = table.loc[int(episode)]
        stats: dict[str, dict[str, np.ndarray]] = {}
        for column in stat_columns:
            feature, stat = column[len(STATS_PREFIX) :].rsplit("/", 1)
            stats.setdefault(feature, {})[stat] = _as_array(row[column])
        result.append(stats)
    return result


def fold_statistics(root: str | Path, train_episodes: Sequence[int]) -> dict[str, dict[str, np.ndarray]]:
    """Normalization statistics over the *training* episodes only.

    Why: ``lerobot-train`` normalizes with ``meta/stats.json``, computed over every episode, so the
    held-out fold leaks into training through the normalizer. Aggregating the per-episode stats of the
    training episodes with lerobot's own ``aggregate_stats`` gives the statistics a model trained on
    this fold alone would have seen.
    """
    from lerobot.datasets.compute_stats import aggregate_stats

    if not train_episodes:
        raise DatasetError("a fold needs at least one training episode to compute statistics.")
    return aggregate_stats(episode_stats(root, train_episodes))


# Inputs ACT can use besides the robot state: at least one must be present.
ACT_CONTEXT_FEATURES = ("observation.environment_state",)


def check_policy_features(root: str | Path, policy_type: str) -> None:
    """Fail early when the dataset lacks a feature the policy needs (before any training is paid for)."""
    features = read_info(root)["features"]
    if "action" not in features:
        raise DatasetError(
            f"the dataset at {root} has no 'action' feature; a policy cannot be trained on it."
        )
    if policy_type == "act":
        has_image = any(spec.get("dtype") in ("image", "video") for spec in features.values())
        if "observation.state" not in features:
            raise DatasetError("ACT needs an 'observation.state' feature, and the dataset has none.")
        if not has_image and not any(key in features for key in ACT_CONTEXT_FEATURES):
            raise DatasetError(
                "ACT needs a camera image or 'observation.environment_state' besides 'observation.state'; "
                f"the dataset has only {sorted(features)}."
            )
