"""The demo dataset: recorded from the simulator's scripted expert, readable by lerobot, deterministic."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from lerobot_kfold import demo, simulation
from tests.conftest import CAMERA_EPISODES, CAMERA_SIZE, DEMO_EPISODES


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


class TestCameras:
    """Camera demos: lerobot's own video features, holding the frames the simulator rendered, in order."""

    def test_cameras_are_lerobot_video_features(self, camera_demo_root):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        info = json.loads((camera_demo_root / "meta" / "info.json").read_text())
        height, width = CAMERA_SIZE
        for camera in ("front", "wrist"):
            key = simulation.camera_key(camera)
            feature = info["features"][key]
            assert feature["dtype"] == "video" and feature["shape"] == [height, width, 3]
            assert feature["info"]["video.codec"] == "av1", "lerobot's default encoder"
            assert sorted((camera_demo_root / "videos" / key).glob("chunk-*/file-*.mp4"))
        assert demo.read_demo_metadata(camera_demo_root)["cameras"] == {
            "cameras": ["front", "wrist"],
            "height": height,
            "width": width,
        }
        dataset = LeRobotDataset("local/cam", root=camera_demo_root, video_backend="pyav", return_uint8=True)
        assert dataset.num_episodes == CAMERA_EPISODES
        item = dataset[5]
        for camera in ("front", "wrist"):
            frame = item[simulation.camera_key(camera)]
            assert frame.dtype == torch.uint8 and tuple(frame.shape) == (3, height, width)
            assert float(frame.float().std()) > 5, "a rendered scene, not a blank frame"

    def test_each_video_frame_is_the_simulators_frame_of_that_step(self, camera_demo_root):
        """Replay episode 0's expert from its seed; the decoded video matches the renders step by step."""
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        meta = demo.read_demo_metadata(camera_demo_root)
        spec = simulation.CameraSpec.from_dict(meta["cameras"])
        config = demo.DemoConfig(root=camera_demo_root.parent / "unused", cameras=spec)
        env = simulation.make_env(spec)
        rig = simulation.CameraRig(env, spec)
        try:
            _, rendered = demo._record_episode(env, rig, meta["recording_seeds"][0], config)
        finally:
            rig.close()
            env.close()
        dataset = LeRobotDataset(
            "local/cam", root=camera_demo_root, episodes=[0], video_backend="pyav", return_uint8=True
        )
        assert len(dataset) == len(rendered)
        for key in spec.keys:
            decoded = np.stack([dataset[i][key].permute(1, 2, 0).numpy() for i in range(len(dataset))])
            renders = np.stack([frame[key] for frame in rendered]).astype(float)
            error = np.abs(decoded - renders).mean(axis=(1, 2, 3))
            shifted = np.abs(decoded[:-8] - renders[8:]).mean(axis=(1, 2, 3))
            # AV1 at crf 30 is lossy: measured 3-7 grey levels on these small frames.
            assert error.max() < 12, f"{key}: video differs from the renders by {error.max():.1f} grey levels"
            assert error.mean() < 0.75 * shifted.mean(), f"{key}: frames are not in step order"

    @pytest.mark.parametrize("cameras", [None, ("front",)], ids=["state", "camera"])
    def test_no_partial_dataset_is_left_when_recording_fails(self, tmp_path, monkeypatch, cameras):
        def broken(*args, **kwargs):
            raise RuntimeError("simulated crash")

        monkeypatch.setattr(demo, "_record_episode", broken)
        spec = None if cameras is None else simulation.CameraSpec(cameras=cameras, height=32, width=32)
        with pytest.raises(RuntimeError, match="simulated crash"):
            demo.record_demo_dataset(demo.DemoConfig(root=tmp_path / "ds", num_episodes=2, cameras=spec))
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize(
        ("text", "size", "message"),
        [
            pytest.param("front,side", None, "cameras must be", id="unknown-camera"),
            pytest.param("front,front", None, "distinct", id="twice"),
            pytest.param("front", "96", "HEIGHTxWIDTH", id="size-text"),
            pytest.param("front", "8x8", "from 16 to", id="too-small"),
        ],
    )
    def test_bad_camera_specs_are_refused(self, text, size, message):
        with pytest.raises(ValueError, match=message):
            simulation.CameraSpec.parse(text, size)

    def test_no_opengl_fails_with_the_install_advice(self):
        """GLFW needs a display, and there is none: the camera rig fails before anything is recorded."""
        code = (
            "from lerobot_kfold import simulation\n"
            "spec = simulation.CameraSpec()\n"
            "simulation.CameraRig(simulation.make_env(spec), spec)\n"
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DISPLAY", "WAYLAND_DISPLAY", "PYOPENGL_PLATFORM")
        }
        env["MUJOCO_GL"] = "glfw"
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("lerobot_kfold.rendering.RenderingUnavailableError"), proc.stderr[-2000:]
        assert "OpenGL" in last and "apt-get install" in last and "libosmesa6" in last
