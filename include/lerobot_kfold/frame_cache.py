"""A fold's video frames decoded once: uint8 in memory within a budget, else memory-mapped on local disk.

Why: ``LeRobotDataset`` decodes the frames of every sampled item from its video file on every step (open
the file, seek to the keyframe before it, decode forward). Over a fold's training that decodes each frame
once per epoch and dominates the step on a GPU (lerobot-train hides it with 4 DataLoader workers). A fold
reads only its own episodes, so decoding them once up front and indexing afterwards removes the cost.

Items stay exactly lerobot's: :class:`CachedFramesDataset` runs lerobot's own item logic once per item
(delta timestamps, clamping at episode ends, ``*_is_pad``, the task string), with its video query answered
by *rows of the cache* instead of decoded frames; the cache itself is filled with lerobot's own decoder
(``decode_video_frames``, ``return_uint8=True`` as lerobot-train reads videos) at the timestamps lerobot
would query. So ``cached[i]`` equals ``LeRobotDataset(..., return_uint8=True)[i]`` key by key, bit for
bit (``tests/lerobot_kfold/test_frame_cache.py`` checks every item).

Where the frames live (:func:`choose_storage`): in memory when they fit the budget (the setting
``frame_cache_gb``), else in a file under the local temp folder (``TMPDIR``; on Modal the container's own
disk), memory-mapped and deleted as soon as it is open, so nothing outlives the process. When neither
fits, the fold keeps lerobot's streaming reads (``fold_data``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

MEMORY, DISK = "memory", "disk"
# Frames decoded per call of lerobot's decoder (one seek, then forward decoding).
DECODE_CHUNK = 64
# Disk space left free beside a memory-mapped cache.
DISK_MARGIN_BYTES = 1 << 30
GIB = 1 << 30


def frame_bytes(meta, keys: Sequence[str]) -> int:
    """Bytes of one frame of every camera in ``keys`` (uint8, from the dataset's feature shapes)."""
    return sum(int(np.prod(meta.features[key]["shape"])) for key in keys)


def cacheable(dataset) -> bool:
    """Whether the cache can serve this dataset: RGB video cameras only, no image transforms."""
    meta = dataset.meta
    if not meta.video_keys or getattr(meta, "depth_keys", []):
        return False
    image_only = set(meta.camera_keys) - set(meta.video_keys)  # dtype "image" (PNG in parquet): no video
    reader = dataset._ensure_reader()
    return not image_only and reader._image_transforms is None


def choose_storage(total_bytes: int, budget_gb: float, folder: str | None = None) -> str | None:
    """``"memory"`` within the budget, ``"disk"`` when the local disk has room, else None (stream)."""
    if total_bytes <= budget_gb * GIB:
        return MEMORY
    free = shutil.disk_usage(folder or tempfile.gettempdir()).free
    return DISK if total_bytes + DISK_MARGIN_BYTES <= free else None


def _allocate(shape: tuple[int, ...], storage: str, folder: str | None) -> np.ndarray:
    if storage == MEMORY:
        return np.empty(shape, dtype=np.uint8)
    handle, path = tempfile.mkstemp(prefix="lerobot_kfold_frames_", suffix=".u8", dir=folder)
    os.close(handle)
    try:
        array = np.memmap(path, dtype=np.uint8, mode="w+", shape=shape)
    finally:
        os.unlink(path)  # the mapping keeps the data; the file goes when the process does
    return array


@dataclass
class FrameCache:
    """Decoded frames of one camera set, one row per frame of the dataset's episodes (CHW uint8)."""

    frames: dict[str, np.ndarray]
    # Per episode: its first row and the timestamps of its frames (sorted), to answer a query.
    first_row: dict[int, int]
    timestamps: dict[int, np.ndarray]
    tolerance_s: float
    storage: str
    seconds: float

    def rows(self, episode: int, query_ts: Sequence[float]) -> torch.Tensor:
        """Rows of the frames at ``query_ts`` of ``episode`` (the timestamps lerobot would decode)."""
        stamps = self.timestamps[episode]
        query = np.asarray(query_ts, dtype=np.float64)
        index = np.clip(np.searchsorted(stamps, query), 1, len(stamps) - 1) if len(stamps) > 1 else None
        if index is None:
            nearest = np.zeros(len(query), dtype=np.int64)
        else:
            left = stamps[index - 1]
            nearest = np.where(np.abs(query - left) <= np.abs(stamps[index] - query), index - 1, index)
        off = np.abs(stamps[nearest] - query)
        if np.any(off >= self.tolerance_s):
            raise ValueError(f"episode {episode}: no cached frame within {self.tolerance_s}s of {query_ts}")
        return torch.from_numpy(self.first_row[episode] + nearest)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.frames.values())


def build_frame_cache(dataset, storage: str, folder: str | None = None) -> FrameCache:
    """Decode every frame of ``dataset``'s episodes once, with lerobot's decoder, into uint8 rows."""
    from lerobot.datasets.video_utils import decode_video_frames

    started = time.perf_counter()
    meta = dataset.meta
    reader = dataset._ensure_reader()
    episode_column = np.asarray(reader.hf_dataset.data.column("episode_index").to_numpy())
    timestamp_column = np.asarray(reader.hf_dataset.data.column("timestamp").to_numpy(), dtype=np.float64)
    episodes = sorted(int(e) for e in np.unique(episode_column))
    first_row, stamps, row = {}, {}, 0
    for episode in episodes:
        stamps[episode] = np.sort(timestamp_column[episode_column == episode])
        first_row[episode] = row
        row += len(stamps[episode])
    frames = {key: _allocate((row, *_chw(meta, key)), storage, folder) for key in meta.video_keys}
    for episode in episodes:
        record = meta.episodes[episode]
        for key in meta.video_keys:
            path = dataset.root / meta.get_video_file_path(episode, key)
            start = float(record[f"videos/{key}/from_timestamp"])
            ts = stamps[episode]
            for begin in range(0, len(ts), DECODE_CHUNK):
                chunk = [start + float(t) for t in ts[begin : begin + DECODE_CHUNK]]
                decoded = decode_video_frames(
                    path, chunk, reader._tolerance_s, reader._video_backend, return_uint8=True
                )
                rows = slice(first_row[episode] + begin, first_row[episode] + begin + len(chunk))
                frames[key][rows] = decoded.numpy()
    cache = FrameCache(
        frames, first_row, stamps, reader._tolerance_s, storage, round(time.perf_counter() - started, 3)
    )
    log.info("decoded %d frames of %s into %s in %.1fs", row, meta.video_keys, storage, cache.seconds)
    return cache


def _chw(meta, key: str) -> tuple[int, int, int]:
    """(C, H, W) of a camera feature (lerobot stores shapes as (H, W, C) with names saying so)."""
    shape = tuple(int(v) for v in meta.features[key]["shape"])
    names = meta.features[key].get("names") or []
    if len(shape) == 3 and list(names)[:1] in (["channels"], ["channel"]):
        return shape  # already (C, H, W)
    height, width, channels = shape
    return channels, height, width


class CachedFramesDataset(torch.utils.data.Dataset):
    """Items of a ``LeRobotDataset`` with their video frames served from a :class:`FrameCache`.

    Every non-video value is read once through lerobot (the ~ms of parquet lookups per item paid once),
    video values are rows of the cache; ``__getitem__`` turns rows back into frames.
    """

    def __init__(self, dataset, cache: FrameCache, batch_size: int = 256):
        from lerobot_kfold.fold_data import PreloadedDataset

        self.meta = dataset.meta
        self.episodes = dataset.episodes
        self.cache = cache
        self.video_keys = list(dataset.meta.video_keys)
        reader = dataset._ensure_reader()
        original = reader._query_videos

        def query_rows(query_timestamps: dict[str, list[float]], ep_idx: int) -> dict[str, torch.Tensor]:
            # lerobot squeezes the time dimension of a single timestamp: do the same with rows.
            return {key: cache.rows(ep_idx, ts).squeeze(0) for key, ts in query_timestamps.items()}

        reader._query_videos = query_rows
        try:
            self._items = PreloadedDataset(dataset, batch_size=batch_size)
        finally:
            reader._query_videos = original

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._items[index]
        for key in self.video_keys:
            rows = item[key].numpy()
            item[key] = torch.from_numpy(np.array(self.cache.frames[key][rows]))
        return item
