"""Which LeRobot dataset format a folder holds, and converting v2.1 to the v3.0 that lerobot 0.6.1 reads.

Why: most LeRobot datasets on the hub and on people's disks were recorded with lerobot <= 0.3.x, which
writes format v2.1 (one parquet and one mp4 per episode, ``meta/*.jsonl``). lerobot 0.6.1 reads only
v3.0 (many episodes per file, ``meta/episodes/*.parquet``) and raises ``BackwardCompatibilityError``
on v2.1. lerobot ships the converter (``lerobot/scripts/convert_dataset_v21_to_v30.py``), but its
entry point ``convert_dataset`` works *in place* on a hub-cache folder: it renames the source to
``<root>_old``, builds ``<root>_v30`` beside it and swaps them, and pushes to the hub unless told not
to. :func:`convert_v21_to_v30` calls the same conversion steps (``convert_info``, ``convert_tasks``,
``convert_data``, ``convert_videos``, ``convert_episodes_metadata``), which only *read* the source
folder, writes into a staging folder next to the target and renames it into place, so the source is
never touched and a target either does not exist or is complete (a crash leaves only a hidden
``.<name>.converting-*`` folder, removed by the next attempt's cleanup or by hand).

Older formats (v1.x, v2.0) have no converter in lerobot 0.6.1: :class:`DatasetFormatError` says how to
bring them to v2.1 first.

Wiring (``jobs.prepare_dataset``): after a fetch and before ``dataset_info.check_dataset_root``, if
``dataset_version(root) == "v2.1"``, convert once into a sibling storage folder with
``convert_v21_to_v30(root, converted, exist_ok=True)`` (a retried or concurrent task finds it done),
use ``converted`` as the dataset root from then on, and put ``record.to_dict()`` in the task's return
value; for other versions ``unsupported_format_message`` is the error text.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

V30 = "v3.0"
V21 = "v2.1"
INFO_PATH = Path("meta") / "info.json"
LEGACY_V1_INFO_PATH = Path("meta_data") / "info.json"
# The files a v2.1 dataset consists of; anything else in the source folder is not carried over.
_V21_LAYOUT = ("meta/info.json", "meta/tasks.jsonl", "meta/episodes.jsonl", "meta/episodes_stats.jsonl")
_V21_FOLDERS = ("data/", "videos/", "images/")


class DatasetFormatError(ValueError):
    """The folder is not a LeRobot dataset, or holds a format this code cannot read or convert."""


def dataset_version(root: str | os.PathLike[str]) -> str:
    """The ``codebase_version`` of the LeRobot dataset at ``root`` (for example ``"v3.0"`` or ``"v2.1"``).

    Reads ``meta/info.json`` (formats v2.x and v3.x) or ``meta_data/info.json`` (format v1.x).
    """
    root = Path(root)
    for rel in (INFO_PATH, LEGACY_V1_INFO_PATH):
        path = root / rel
        if path.is_file():
            try:
                info = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise DatasetFormatError(f"{path} is not readable JSON ({exc})") from exc
            version = info.get("codebase_version") if isinstance(info, dict) else None
            if not isinstance(version, str) or not version:
                raise DatasetFormatError(
                    f"{path} has no 'codebase_version': not a LeRobot dataset's info file"
                )
            return version
    if not root.exists():
        raise DatasetFormatError(f"{root} does not exist")
    raise DatasetFormatError(
        f"{root} is not a LeRobot dataset: it has no {INFO_PATH} (formats v2 and v3) and no "
        f"{LEGACY_V1_INFO_PATH} (format v1). Point at the folder that contains meta/, data/ and videos/."
    )


def _major_minor(version: str) -> tuple[int, int] | None:
    try:
        major, minor = version.lstrip("v").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def unsupported_format_message(root: str | os.PathLike[str], version: str) -> str:
    """Why a dataset of ``version`` cannot be used here, and how to fix it (one paragraph)."""
    parsed = _major_minor(version)
    if version == V21:
        return (
            f"{root} is a LeRobot {V21} dataset; lerobot 0.6.1 reads only {V30}. Convert it once with "
            "lerobot_kfold.dataset_format.convert_v21_to_v30(source, target) (lerobot's own converter, "
            "offline, source left untouched)."
        )
    if parsed is not None and parsed < (2, 1):
        steps = (
            "lerobot 0.3.3's 'lerobot/datasets/v2/convert_dataset_v1_to_v2.py', then "
            "'lerobot/datasets/v21/convert_dataset_v20_to_v21.py'"
            if parsed[0] < 2
            else "lerobot 0.3.3's 'lerobot/datasets/v21/convert_dataset_v20_to_v21.py'"
        )
        return (
            f"{root} is a LeRobot {version} dataset; lerobot 0.6.1 reads only {V30} and converts only from "
            f"{V21}. Bring it to {V21} first with {steps} (in a separate Python 3.12 venv with "
            f"'pip install lerobot==0.3.3'; those scripts work on hub repositories and push the result), "
            f"then convert {V21} to {V30} here."
        )
    return (
        f"{root} is a LeRobot dataset of format {version!r}, newer than or different from the {V30} that "
        "lerobot 0.6.1 reads: use a lerobot release that reads it, or a copy of the dataset in format "
        f"{V30}."
    )


def check_readable(root: str | os.PathLike[str]) -> str:
    """Return the version when lerobot 0.6.1 can read the dataset (v3.0), else raise DatasetFormatError."""
    version = dataset_version(root)
    if version != V30:
        raise DatasetFormatError(unsupported_format_message(root, version))
    return version


@dataclass(frozen=True)
class ConversionRecord:
    """What :func:`convert_v21_to_v30` did, for a log line, an XCom or a run manifest."""

    # "converted", or "already_converted" (target existed in v3.0 and exist_ok was set: nothing done)
    action: str
    source_root: str
    target_root: str
    source_version: str
    target_version: str
    # lerobot release whose converter ran
    lerobot_version: str
    total_episodes: int
    total_frames: int
    video_keys: list[str] = field(default_factory=list)
    # source files outside the v2.1 layout (a README.md dataset card, .gitattributes, ...), not copied
    files_not_carried: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _info(root: Path) -> dict[str, Any]:
    return json.loads((root / INFO_PATH).read_text())


def _files_not_carried(source: Path) -> list[str]:
    out = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source).as_posix()
        if rel in _V21_LAYOUT or rel.startswith(_V21_FOLDERS):
            continue
        out.append(rel)
    return out


def _parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(folder.rglob("*.parquet")))


def _check_converted(staged: Path, source_info: dict[str, Any]) -> dict[str, Any]:
    """The staged v3.0 folder is complete and holds what the source holds (cheap checks, before rename)."""
    info = _info(staged)
    problems = []
    if info.get("codebase_version") != V30:
        problems.append(f"codebase_version is {info.get('codebase_version')!r}")
    for key in ("total_episodes", "total_frames", "fps"):
        if info.get(key) != source_info.get(key):
            problems.append(f"{key} {info.get(key)} != source {source_info.get(key)}")
    for rel in ("meta/tasks.parquet", "meta/stats.json"):
        if not (staged / rel).is_file():
            problems.append(f"{rel} missing")
    episodes_rows = _parquet_rows(staged / "meta" / "episodes")
    if episodes_rows != source_info.get("total_episodes"):
        problems.append(f"meta/episodes has {episodes_rows} rows")
    frames = _parquet_rows(staged / "data")
    if frames != source_info.get("total_frames"):
        problems.append(f"data has {frames} rows")
    for key, ft in info.get("features", {}).items():
        if ft.get("dtype") == "video" and not any((staged / "videos" / key).rglob("*.mp4")):
            problems.append(f"no video files for {key}")
    if problems:
        raise DatasetFormatError("the converted dataset failed its checks: " + "; ".join(problems))
    return info


def convert_v21_to_v30(
    source_root: str | os.PathLike[str],
    target_root: str | os.PathLike[str],
    *,
    exist_ok: bool = False,
    data_file_size_in_mb: int | None = None,
    video_file_size_in_mb: int | None = None,
) -> ConversionRecord:
    """Convert the v2.1 dataset at ``source_root`` into a new v3.0 dataset at ``target_root``.

    The source is only read. The conversion runs with lerobot's own steps into a hidden staging
    folder in ``target_root``'s parent (same file system), is checked (version, episode and frame
    counts, every file present), and is then renamed to ``target_root`` in one step: readers never see
    a half-written target. Raises ``FileExistsError`` when the target exists, unless ``exist_ok`` and
    the target is already v3.0 (a retried task: then nothing is done and the record says so).
    Raises :class:`DatasetFormatError` when the source is not v2.1 (saying how to fix it).

    Videos are concatenated without re-encoding (PyAV stream copy); no system ffmpeg is needed.
    """
    source = Path(source_root).resolve()
    target = Path(target_root).absolute()
    start = time.monotonic()
    _check_convertible(source, target)
    source_info = _info(source)

    def record(action: str, target_info: dict[str, Any]) -> ConversionRecord:
        return _conversion_record(action, source, target, source_info, target_info, start)

    if target.exists():
        return record("already_converted", _existing_target(target, exist_ok))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.converting-", dir=target.parent))
    try:
        staged = staging / "dataset"
        _run_lerobot_converter(source, staged, data_file_size_in_mb, video_file_size_in_mb)
        target_info = _check_converted(staged, source_info)
        try:
            os.rename(staged, target)  # atomic on one file system; fails if a target appeared meanwhile
        except OSError:
            if target.exists():  # a concurrent conversion won the race
                return record("already_converted", _existing_target(target, exist_ok))
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record("converted", target_info)


def _check_convertible(source: Path, target: Path) -> None:
    version = dataset_version(source)
    if version != V21:
        if version == V30:
            raise DatasetFormatError(
                f"{source} is already a {V30} dataset: use it directly, nothing to convert"
            )
        raise DatasetFormatError(unsupported_format_message(source, version))
    if target == source or source in target.parents:
        raise ValueError(f"target {target} must be outside the source dataset {source}")


def _existing_target(target: Path, exist_ok: bool) -> dict[str, Any]:
    """The info of a v3.0 dataset already at the target (a retried task), else ``FileExistsError``."""
    if exist_ok and (target / INFO_PATH).is_file() and dataset_version(target) == V30:
        return _info(target)
    raise FileExistsError(
        f"{target} already exists; remove it, choose another target, or pass exist_ok=True to accept an "
        f"existing {V30} dataset there"
    )


def _run_lerobot_converter(source: Path, staged: Path, data_mb: int | None, video_mb: int | None) -> None:
    """lerobot's conversion steps, reading ``source``, writing ``staged`` (its CLI converts in place)."""
    from lerobot.scripts import convert_dataset_v21_to_v30 as converter

    data_mb = data_mb or converter.DEFAULT_DATA_FILE_SIZE_IN_MB
    video_mb = video_mb or converter.DEFAULT_VIDEO_FILE_SIZE_IN_MB
    converter.convert_info(source, staged, data_mb, video_mb)
    converter.convert_tasks(source, staged)
    episodes_metadata = converter.convert_data(source, staged, data_mb)
    episodes_videos_metadata = converter.convert_videos(source, staged, video_mb)
    converter.convert_episodes_metadata(source, staged, episodes_metadata, episodes_videos_metadata)


def _conversion_record(
    action: str,
    source: Path,
    target: Path,
    source_info: dict[str, Any],
    target_info: dict[str, Any],
    start: float,
) -> ConversionRecord:
    import lerobot

    video_keys = sorted(k for k, ft in source_info["features"].items() if ft.get("dtype") == "video")
    return ConversionRecord(
        action=action,
        source_root=str(source),
        target_root=str(target),
        source_version=source_info.get("codebase_version", ""),
        target_version=target_info.get("codebase_version", ""),
        lerobot_version=getattr(lerobot, "__version__", "unknown"),
        total_episodes=int(target_info.get("total_episodes", 0)),
        total_frames=int(target_info.get("total_frames", 0)),
        video_keys=video_keys,
        files_not_carried=_files_not_carried(source),
        seconds=round(time.monotonic() - start, 3),
    )
