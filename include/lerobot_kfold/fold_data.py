"""The data side of one fold: lerobot datasets restricted to the fold's episodes, and their loaders.

Why preload: reading one item from ``LeRobotDataset`` costs ~5 ms (parquet lookups for every delta
timestamp), about 170 ms for a batch of 32, which dominated a tiny ACT's ~40 ms step. For a dataset
without camera features the whole fold fits in memory: we read every item once through lerobot itself
and serve the identical tensors afterwards. Camera datasets keep lerobot's streaming reads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


def make_episode_dataset(
    repo_id: str,
    root: str,
    episodes: Sequence[int],
    delta_timestamps: dict[str, list[float]] | None,
):
    """A LeRobotDataset serving exactly ``episodes`` (pyav video backend: torchcodec needs system FFmpeg)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from lerobot_kfold.dataset_info import check_dataset_root

    check_dataset_root(root)
    return LeRobotDataset(
        repo_id,
        root=root,
        episodes=sorted(int(e) for e in episodes),
        delta_timestamps=delta_timestamps,
        video_backend="pyav",
    )


def maybe_preload(dataset, enabled: bool) -> torch.utils.data.Dataset:
    """Preload a dataset without cameras; return camera datasets unchanged."""
    if not enabled or dataset.meta.camera_keys:
        return dataset
    return PreloadedDataset(dataset)


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
