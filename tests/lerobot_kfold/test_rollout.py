"""Closed-loop evaluation: a trained policy drives the simulator from starts never seen in recording."""

from __future__ import annotations

import pytest
import torch

from lerobot_kfold import demo
from lerobot_kfold.training import train_fold
from lerobot_kfold.training_config import DEMO_ACT_OVERRIDES, FoldTrainingConfig


def _quiet(message: str) -> None:
    pass


class TestSimulatorEvaluation:
    def test_fold_result_reports_success_rate_on_unseen_seeds(self, demo_root, tmp_path):
        config = FoldTrainingConfig(
            dataset_root=str(demo_root),
            train_episodes=list(range(2, 12)),
            val_episodes=[0, 1],
            output_dir=str(tmp_path / "fold"),
            policy_overrides=dict(DEMO_ACT_OVERRIDES),
            steps=4,
            batch_size=8,
            eval_every=4,
            save_every=4,
            sim_eval_episodes=2,
            sim_eval_max_steps=15,
            torch_threads=1,
        )
        result = train_fold(config, progress=_quiet)
        sim = result.sim
        assert sim["sim_episodes"] == 2
        assert len(sim["sim_successes"]) == 2
        assert 0.0 <= result.metrics["sim_success_rate"] <= 1.0
        assert result.metrics["sim_success_rate"] == sum(sim["sim_successes"]) / 2
        # Every rollout either succeeded or ran into the step limit (a 4-step policy rarely succeeds).
        assert 1 <= result.metrics["sim_mean_episode_length"] <= 15
        recorded = set(demo.read_demo_metadata(demo_root)["recording_seeds"])
        assert not recorded & set(sim["sim_seeds"])

    def test_refuses_a_dataset_not_recorded_from_the_simulator(self, demo_root, tmp_path):
        import shutil

        from lerobot_kfold.rollout import evaluate_in_simulator

        copy = tmp_path / "copy"
        shutil.copytree(demo_root, copy)
        (copy / demo.DEMO_META_FILE).unlink()
        with pytest.raises(ValueError, match="sim_eval_episodes=0"):
            evaluate_in_simulator(None, None, None, str(copy), num_episodes=1)

    def test_the_scripted_expert_succeeds_through_the_same_environment(self):
        """The evaluation environment is solvable: the expert that recorded the data solves it."""
        from lerobot_env_so101.policy import DEFAULT_ACTION_SCALE
        from lerobot_env_so101.scripted.pick_place import PickPlaceController

        from lerobot_kfold import simulation

        env = simulation.make_env()
        try:
            for seed in demo.evaluation_seeds(3):
                obs, _ = env.reset(seed=seed)
                controller = PickPlaceController(action_scale=DEFAULT_ACTION_SCALE)
                succeeded = False
                for _ in range(simulation.MAX_EPISODE_STEPS):
                    block, goal = simulation.block_and_goal(obs)
                    obs, _, terminated, truncated, info = env.step(
                        controller.act(env.unwrapped.ik_point_pos, block, goal)
                    )
                    succeeded = succeeded or bool(info.get("succeed"))
                    if terminated or truncated:
                        break
                assert succeeded, f"expert failed on evaluation seed {seed}"
        finally:
            env.close()


class TestCameraObservations:
    def test_rollouts_feed_the_policy_what_training_fed_it(self, camera_demo_root):
        """Same camera features, dtype, layout and range as a training batch after its conversion."""
        from lerobot_kfold import fold_data, simulation
        from lerobot_kfold.rollout import _observation_batch

        dataset = fold_data.make_episode_dataset("local/cam", str(camera_demo_root), [0], None)
        trained = fold_data.camera_frames_to_float(
            torch.utils.data.default_collate([dataset[3]]), dataset.meta.camera_keys, "cpu"
        )
        spec = demo.recorded_cameras(demo.read_demo_metadata(camera_demo_root))
        env = simulation.make_env(spec)
        rig = simulation.CameraRig(env, spec)
        try:
            obs, _ = env.reset(seed=demo.evaluation_seeds(1)[0])
            rolled = _observation_batch(obs, rig)
        finally:
            rig.close()
            env.close()
        observed = {k for k in trained if k.startswith("observation.")}
        assert set(rolled) - {"task"} == observed
        for key in observed:
            assert rolled[key].dtype == trained[key].dtype == torch.float32, key
            assert rolled[key].shape == trained[key].shape, key
        for key in spec.keys:
            assert float(rolled[key].min()) >= 0.0 and float(rolled[key].max()) <= 1.0
