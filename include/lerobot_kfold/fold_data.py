"""The data side of one fold: lerobot datasets restricted to the fold's episodes, and their loaders.

How a fold's items are served (:func:`fold_data`), fastest first, every way giving lerobot's own items:

- ``preloaded``: a dataset without cameras is read once through lerobot and served from memory. Reading
  one item from ``LeRobotDataset`` costs ~5 ms (parquet lookups for every delta timestamp), about 170 ms
  for a batch of 32, which dominated a tiny ACT's ~40 ms step.
- ``memory`` / ``disk``: a video dataset's frames are decoded once into a uint8 frame cache
  (:mod:`lerobot_kfold.frame_cache`), in memory within ``frame_cache_gb``, else memory-mapped on local
  disk; the other values are preloaded as above. No DataLoader workers: an item is an index lookup.
- ``streaming``: what lerobot-train does, each item decoded from its video per step, with DataLoader
  workers (lerobot-train's default 4): for image-dtype cameras, depth videos, or a cache the local disk
  cannot hold.

Video items are uint8 (``return_uint8=True``, as lerobot-train reads them); training converts them to
float in [0, 1] on the device.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)


class PreloadedDataset(torch.utils.data.Dataset):
    """Every item of a map-style dataset, read once and kept as stacked tensors (or lists)."""

    def __init__(self, source: torch.utils.data.Dataset, batch_size: int = 256):
        columns: dict[str, list[Any]] = {}
        loader = torch.utils.data.DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=0)
        for batch in loader:
            for key, value in batch.items():
                columns.setdefault(key, []).append(value)
        self._length = len(source)  # type: ignore[arg-type]
        self._columns: dict[str, Any] = {}
        for key, chunks in columns.items():
            if isinstance(chunks[0], torch.Tensor):
                self._columns[key] = torch.cat(chunks)
            else:
                self._columns[key] = [item for chunk in chunks for item in chunk]

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {key: column[index] for key, column in self._columns.items()}


def load_metadata(repo_id: str, root: str):
    """lerobot's metadata object for a local root (the root is checked first, so no hub access)."""
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

    from lerobot_kfold.dataset_info import check_dataset_root

    check_dataset_root(root)
    return LeRobotDatasetMetadata(repo_id, root=root)


def video_backend() -> str:
    """lerobot's own choice: torchcodec where it loads (it needs FFmpeg's libraries), else pyav."""
    from lerobot.utils.import_utils import get_safe_default_video_backend

    return get_safe_default_video_backend()


def make_episode_dataset(
    repo_id: str,
    root: str,
    episodes: Sequence[int],
    delta_timestamps: dict[str, list[float]] | None,
):
    """A LeRobotDataset serving exactly ``episodes``, video frames as uint8 (as lerobot-train reads them)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from lerobot_kfold.dataset_info import check_dataset_root

    check_dataset_root(root)
    return LeRobotDataset(
        repo_id,
        root=root,
        episodes=sorted(int(e) for e in episodes),
        delta_timestamps=delta_timestamps,
        video_backend=video_backend(),
        return_uint8=True,
    )


PRELOADED, STREAMING = "preloaded", "streaming"
# lerobot-train's default DataLoader workers, for items decoded from video on every step.
STREAMING_WORKERS = 4


@dataclass
class FoldData:
    """A fold's training and held-out items, how they are served, and the DataLoader workers to use."""

    train: torch.utils.data.Dataset
    # None for a refit without a hold-out
    val: torch.utils.data.Dataset | None
    # PRELOADED, frame_cache.MEMORY, frame_cache.DISK or STREAMING
    mode: str
    num_workers: int
    seconds: float

    def describe(self) -> str:
        workers = f", {self.num_workers} DataLoader workers" if self.num_workers else ""
        return f"items {self.mode} ({self.seconds:.1f}s to prepare{workers})"


def fold_data(
    train_set, val_set, *, preload: bool, frame_cache_gb: float, num_workers: int | None = None
) -> FoldData:
    """Serve the fold's items the fastest way that gives lerobot's items (see the module docstring)."""
    from lerobot_kfold import frame_cache

    started = time.perf_counter()
    sets = [train_set] if val_set is None else [train_set, val_set]
    mode = STREAMING
    served = sets
    if preload and not train_set.meta.camera_keys:
        mode = PRELOADED
        served = [PreloadedDataset(one) for one in sets]
    elif preload and frame_cache.cacheable(train_set):
        frames = sum(len(one) for one in sets)
        keys = train_set.meta.video_keys
        storage = frame_cache.choose_storage(
            frames * frame_cache.frame_bytes(train_set.meta, keys), frame_cache_gb
        )
        if storage is not None:
            mode = storage
            served = [
                frame_cache.CachedFramesDataset(one, frame_cache.build_frame_cache(one, storage))
                for one in sets
            ]
    train, val = served[0], (served[1] if len(served) > 1 else None)
    if num_workers is None:
        num_workers = min(STREAMING_WORKERS, os.cpu_count() or 1) if mode == STREAMING else 0
    return FoldData(train, val, mode, num_workers, round(time.perf_counter() - started, 3))


def make_train_sampler(dataset, seed: int, drop_n_last_frames: int = 0):
    """lerobot's EpisodeAwareSampler over the fold's training episodes.

    Its order is a pure function of (seed, epoch), which is what makes resuming sample-exact.
    """
    from lerobot.datasets import EpisodeAwareSampler

    return EpisodeAwareSampler(
        dataset.meta.episodes["dataset_from_index"],
        dataset.meta.episodes["dataset_to_index"],
        episode_indices_to_use=dataset.episodes,
        drop_n_last_frames=drop_n_last_frames,
        shuffle=True,
        seed=seed,
        absolute_to_relative_idx=dataset.absolute_to_relative_idx,
    )


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    num_workers: int,
    sampler=None,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader configured as lerobot-train configures its own (no worker options with 0 workers)."""
    worker_options: dict[str, Any] = {}
    if num_workers > 0:
        worker_options = {
            "persistent_workers": True,
            "prefetch_factor": 4,
            "multiprocessing_context": "spawn",
        }
    # A private generator: creating a DataLoader iterator draws a base seed from its generator, and
    # drawing it from the global RNG would shift dropout noise when a resumed run re-creates the iterator.
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(0),
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        **worker_options,
    )


def camera_frames_to_float(batch: dict[str, Any], camera_keys: Sequence[str], device: str) -> dict[str, Any]:
    """uint8 camera frames to float32 in [0, 1] as lerobot-train converts them, on ``device``.

    Moving the uint8 frames first copies 4x fewer bytes to a GPU (from pinned memory, without waiting);
    on the CPU it is exactly lerobot-train's conversion.
    """
    for key in camera_keys:
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.dtype == torch.uint8:
            batch[key] = value.to(device, non_blocking=True).to(dtype=torch.float32) / 255.0
    return batch
