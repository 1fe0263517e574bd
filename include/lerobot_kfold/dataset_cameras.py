"""A dataset's cameras against what a run needs of them, checked before any fold is paid for.

Why: a camera problem found inside a fold costs k GPU containers each failing after minutes of start-up
(image pull, dataset copy, policy build). Every check here reads the dataset's metadata and, for
videos, decodes one frame per video file, so it runs in ``validate`` and ``prepare_dataset`` in seconds.
Each message names the feature.

- ACT's vision backbone reads 3-channel RGB images: a camera of another shape (a depth map, a
  grey-scale stream) fails with its name and shape.
- Every video file the episodes point at exists and decodes with the video backend folds will use.
- Closed-loop rollouts render the simulator's cameras: the dataset's camera features (names and sizes)
  must be the ones the recording used, or the policy would be fed images it never saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lerobot_kfold.dataset_info import DatasetError, read_info

# Policies whose vision backbone takes RGB frames.
RGB_POLICIES = ("act",)


def camera_features(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The camera features of ``meta/info.json`` (dtype video or image), by name."""
    return {key: ft for key, ft in info["features"].items() if ft.get("dtype") in ("video", "image")}


def has_cameras(root: str | Path) -> bool:
    return bool(camera_features(read_info(root)))


def _channels(feature: dict[str, Any]) -> int | None:
    shape = list(feature.get("shape") or [])
    names = list(feature.get("names") or [])
    if len(shape) != 3:
        return None
    for position, name in enumerate(names[:3]):
        if name in ("channels", "channel"):
            return int(shape[position])
    return int(shape[-1])


def check_policy_cameras(info: dict[str, Any], policy_type: str) -> None:
    """Every camera is an RGB image the policy's backbone can read (ACT: 3 channels, not a depth map)."""
    if policy_type not in RGB_POLICIES:
        return
    for key, feature in camera_features(info).items():
        video = feature.get("info") or {}
        if video.get("video.is_depth_map") or _channels(feature) != 3:
            raise DatasetError(
                f"camera feature {key!r} has shape {feature.get('shape')}"
                f"{' (a depth map)' if video.get('video.is_depth_map') else ''}; {policy_type.upper()}'s "
                "ResNet backbone reads 3-channel RGB images. Drop the feature from the dataset (lerobot's "
                "lerobot-edit-dataset remove_feature) or record it as RGB."
            )


def check_simulator_cameras(root: str | Path, info: dict[str, Any]) -> None:
    """Rollouts render the cameras the demo was recorded with: they must be the dataset's cameras."""
    from lerobot_kfold import demo

    meta = demo.read_demo_metadata(root)
    if meta is None:  # not a simulator dataset at all: planning refuses rollouts on it (jobs.plan_run)
        return
    spec = demo.recorded_cameras(meta)
    rendered = {} if spec is None else {key: [spec.height, spec.width, 3] for key in spec.keys}
    in_dataset = {key: list(ft.get("shape") or []) for key, ft in camera_features(info).items()}
    for key in sorted(set(rendered) | set(in_dataset)):
        if rendered.get(key) != in_dataset.get(key):
            raise DatasetError(
                f"camera feature {key!r}: the dataset has {in_dataset.get(key) or 'no such camera'} but the "
                f"simulator renders {rendered.get(key) or 'no such camera'} for rollouts (recorded cameras: "
                f"{sorted(rendered) or 'none'}). Roll out only datasets recorded by 'lerobot_kfold "
                "demo-dataset' as they are, or set sim_eval_episodes to 0."
            )


def video_files(root: str | Path) -> dict[str, list[Path]]:
    """The video files the episodes of the dataset point at, per camera feature."""
    from lerobot_kfold.dataset_info import load_episode_table

    root = Path(root)
    info = read_info(root)
    template = info.get("video_path")
    videos = [key for key, ft in info["features"].items() if ft.get("dtype") == "video"]
    if not videos:
        return {}
    if not template:
        raise DatasetError(f"{root}/meta/info.json has video features {videos} but no 'video_path'.")
    table = load_episode_table(root)
    files: dict[str, list[Path]] = {}
    for key in videos:
        chunk_column, file_column = f"videos/{key}/chunk_index", f"videos/{key}/file_index"
        if chunk_column not in table or file_column not in table:
            raise DatasetError(
                f"video feature {key!r}: meta/episodes/ does not say which video file holds each episode."
            )
        pairs = sorted(
            {(int(c), int(f)) for c, f in zip(table[chunk_column], table[file_column], strict=True)}
        )
        files[key] = [root / template.format(video_key=key, chunk_index=c, file_index=f) for c, f in pairs]
    return files


def check_videos_decode(root: str | Path, backend: str | None = None) -> int:
    """Decode the first frame of every video file (with the backend folds use); returns the file count."""
    from lerobot.datasets.video_utils import decode_video_frames

    from lerobot_kfold.fold_data import video_backend

    backend = backend or video_backend()
    checked = 0
    for key, paths in video_files(root).items():
        for path in paths:
            if not path.is_file():
                raise DatasetError(f"video feature {key!r}: {path} is missing (an incomplete download?).")
            try:
                frames = decode_video_frames(path, [0.0], tolerance_s=1.0, backend=backend, return_uint8=True)
            except Exception as exc:
                raise DatasetError(
                    f"video feature {key!r}: {path} cannot be decoded with the {backend!r} backend "
                    f"({type(exc).__name__}: {exc}). Re-fetch the dataset, or re-encode the video "
                    "(lerobot encodes AV1 with libsvtav1; PyAV's wheels decode it)."
                ) from exc
            if frames.ndim != 4 or frames.shape[0] != 1:
                raise DatasetError(f"video feature {key!r}: {path} gave no frame at its start.")
            checked += 1
    return checked


def check_cameras_for_run(
    root: str | Path, policy_type: str, sim_eval_episodes: int = 0, *, decode: bool = True
) -> list[str]:
    """All the checks above for one run; returns the camera features (for messages)."""
    info = read_info(root)
    check_policy_cameras(info, policy_type)
    if sim_eval_episodes > 0:
        check_simulator_cameras(root, info)
    if decode:
        check_videos_decode(root)
    return sorted(camera_features(info))
