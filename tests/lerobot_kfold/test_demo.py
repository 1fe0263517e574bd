"""The demo dataset: recorded from the simulator's scripted expert, readable by lerobot, deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lerobot_kfold import demo, simulation
from tests.conftest import DEMO_EPISODES


def _frames(root) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(f) for f in sorted((root / "data").glob("*/*.parquet")))


class TestRecording:
    def test_round_trips_through_lerobot_dataset(self, demo_root):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        dataset = LeRobotDataset("local/so101_pick_place_demo", root=demo_root, video_backend="pyav")
        assert dataset.num_episodes == DEMO_EPISODES
        assert dataset.fps == simulation.FPS
        item = dataset[0]
        assert item["observation.state"].shape == (14,)
        assert item["observation.environment_state"].shape == (6,)
        assert item["action"].shape == (4,)
        assert item["task"] == simulation.TASK

    def test_every_episode_is_a_successful_expert_demonstration_with_a_tail(self, demo_root):
        meta = demo.read_demo_metadata(demo_root)
        assert meta["num_episodes"] == DEMO_EPISODES
        assert meta["expert_failed_seeds"] == []
        frames = _frames(demo_root)
        lengths = frames.groupby("episode_index").size().to_numpy()
        # The expert succeeds at success_step; ten more frames are recorded after it.
        expected = np.asarray(meta["success_steps"]) + 1 + meta["extra_frames_after_success"]
        np.testing.assert_array_equal(lengths, expected)

    def test_block_and_goal_differ_between_episodes(self, demo_root):
        frames = _frames(demo_root)
        first = frames.groupby("episode_index").first()
        starts = np.stack(first["observation.environment_state"].to_numpy())
        assert len(np.unique(starts.round(4), axis=0)) == DEMO_EPISODES

    def test_same_seed_records_the_same_data(self, tmp_path):
        a = demo.record_demo_dataset(demo.DemoConfig(root=tmp_path / "a", num_episodes=2, seed=3))
        b = demo.record_demo_dataset(demo.DemoConfig(root=tmp_path / "b", num_episodes=2, seed=3))
        assert a["recording_seeds"] == b["recording_seeds"]
        pd.testing.assert_frame_equal(_frames(tmp_path / "a"), _frames(tmp_path / "b"))

    def test_no_partial_dataset_is_left_when_recording_fails(self, tmp_path, monkeypatch):
        def broken(*args, **kwargs):
            raise RuntimeError("simulated crash")

        monkeypatch.setattr(demo, "_record_episode", broken)
        with pytest.raises(RuntimeError, match="simulated crash"):
            demo.record_demo_dataset(demo.DemoConfig(root=tmp_path / "ds", num_episodes=2))
        assert list(tmp_path.iterdir()) == []


class TestSeeds:
    def test_evaluation_seeds_never_meet_recording_seeds(self, demo_root):
        recorded = set(demo.read_demo_metadata(demo_root)["recording_seeds"])
        for seed in range(3):
            assert not recorded & set(demo.evaluation_seeds(50, seed))


class TestConfigValidation:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            pytest.param({"num_episodes": 0}, "num_episodes", id="no-episodes"),
            pytest.param({"seed": -1}, "seed", id="negative-seed"),
            pytest.param({"extra_frames_after_success": -1}, "extra_frames", id="negative-tail"),
        ],
    )
    def test_rejects_bad_values(self, tmp_path, kwargs, message):
        with pytest.raises(ValueError, match=message):
            demo.DemoConfig(root=tmp_path / "new", **kwargs)

    def test_refuses_an_existing_root(self, tmp_path):
        with pytest.raises(ValueError, match="already exists"):
            demo.DemoConfig(root=tmp_path)


class TestImages:
    def test_image_flag_adds_a_camera_feature_or_explains_what_is_missing(self, tmp_path):
        config = demo.DemoConfig(root=tmp_path / "img", num_episodes=1, with_images=True)
        try:
            demo.record_demo_dataset(config)
        except simulation.RenderingUnavailableError as exc:
            assert "OpenGL" in str(exc) and "MUJOCO_GL" in str(exc)
            assert not (tmp_path / "img").exists()
            return
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        dataset = LeRobotDataset("local/img", root=tmp_path / "img", video_backend="pyav")
        assert dataset[0][simulation.IMAGE_KEY].shape == (3, 64, 64)
