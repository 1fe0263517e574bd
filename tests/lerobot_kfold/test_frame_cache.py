"""The fold-local frame cache serves exactly lerobot's items, decoded once, in memory or memory-mapped."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from lerobot_kfold import fold_data, frame_cache
from lerobot_kfold.simulation import camera_key

EPISODES = [1, 2, 4, 6]
# ACT's (an action chunk), and one with past frames of a camera and the state (diffusion-policy style).
ACT_DELTAS = {"action": [i / 10 for i in range(10)]}
PAST_FRAMES = {"action": [0.0, 0.1], camera_key("front"): [-0.2, -0.1, 0.0], "observation.state": [-0.1, 0.0]}


def assert_same_items(expected, served) -> None:
    assert len(expected) == len(served)
    for index in range(len(expected)):
        a, b = expected[index], served[index]
        assert a.keys() == b.keys(), (index, a.keys() ^ b.keys())
        for key, value in a.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == b[key].dtype and value.shape == b[key].shape, (index, key)
                assert torch.equal(value, b[key]), f"item {index}: {key} differs"
            else:
                assert value == b[key], (index, key)


@pytest.mark.parametrize("storage", [frame_cache.MEMORY, frame_cache.DISK])
@pytest.mark.parametrize("deltas", [ACT_DELTAS, PAST_FRAMES], ids=["act", "past-frames"])
def test_every_item_equals_lerobots(camera_demo_root, storage, deltas) -> None:
    dataset = fold_data.make_episode_dataset("local/cam", str(camera_demo_root), EPISODES, deltas)
    cache = frame_cache.build_frame_cache(dataset, storage)
    frames = cache.frames[camera_key("front")]
    assert isinstance(frames, np.memmap) == (storage == frame_cache.DISK)
    assert frames.dtype == np.uint8 and frames.shape[0] == len(dataset), "each frame decoded once"
    assert_same_items(dataset, frame_cache.CachedFramesDataset(dataset, cache))


def test_a_fold_within_budget_is_cached_in_memory_and_above_it_on_disk(camera_demo_root) -> None:
    train = fold_data.make_episode_dataset("local/cam", str(camera_demo_root), [2, 3, 4, 5, 6, 7], ACT_DELTAS)
    val = fold_data.make_episode_dataset("local/cam", str(camera_demo_root), [0, 1], ACT_DELTAS)
    in_memory = fold_data.fold_data(train, val, preload=True, frame_cache_gb=1.0)
    assert (in_memory.mode, in_memory.num_workers) == (frame_cache.MEMORY, 0)
    on_disk = fold_data.fold_data(train, val, preload=True, frame_cache_gb=0.0)
    assert (on_disk.mode, on_disk.num_workers) == (frame_cache.DISK, 0)
    assert_same_items(val, on_disk.val)
    streamed = fold_data.fold_data(train, val, preload=False, frame_cache_gb=1.0)
    assert streamed.mode == fold_data.STREAMING and streamed.train is train
    assert streamed.num_workers == min(fold_data.STREAMING_WORKERS, os.cpu_count() or 1)


def test_without_room_on_the_local_disk_the_fold_streams(tmp_path) -> None:
    free = shutil.disk_usage(tmp_path).free
    assert frame_cache.choose_storage(10, 1.0, str(tmp_path)) == frame_cache.MEMORY
    assert frame_cache.choose_storage(2 << 30, 1.0, str(tmp_path)) in (frame_cache.DISK, None)
    assert frame_cache.choose_storage(free + (2 << 30), 1.0, str(tmp_path)) is None


def test_the_memory_mapped_file_is_gone_once_open(camera_demo_root, tmp_path) -> None:
    dataset = fold_data.make_episode_dataset("local/cam", str(camera_demo_root), [0], ACT_DELTAS)
    cache = frame_cache.build_frame_cache(dataset, frame_cache.DISK, folder=str(tmp_path))
    assert list(tmp_path.iterdir()) == [], "nothing outlives the process"
    assert int(cache.frames[camera_key("wrist")].max()) > 0
