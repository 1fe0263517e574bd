"""Closed-loop evaluation: roll a trained policy out in the simulator the demo data was recorded from.

Why: offline validation loss tracks rollout success poorly (octo, diffusion_policy and others report
it; so did our own probes, where a longer run reached a lower validation L1 and 0% success). Success
rate on unseen starting positions is what users care about, so it is reported beside the offline
metrics whenever the dataset came from the simulator.

Rollout seeds come from :func:`lerobot_kfold.demo.evaluation_seeds` and are checked against the seeds
recorded in the dataset: evaluation never replays a training episode's start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lerobot_kfold import demo, simulation


@dataclass
class RolloutMetrics:
    sim_success_rate: float
    sim_mean_episode_length: float
    sim_episodes: int
    sim_seeds: list[int]
    sim_successes: list[bool]
    sim_seconds: float

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def _observation_batch(obs: dict, rig: simulation.CameraRig | None) -> dict:
    """One observation as a batch of one, in the layout the dataset served during training."""
    frame = simulation.observation_to_frame(obs, rig)
    camera_keys = rig.spec.keys if rig is not None else ()
    batch: dict = {}
    for key, value in frame.items():
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        if key in camera_keys:  # HWC uint8 -> CHW float in [0, 1], as training converts the dataset's
            tensor = tensor.permute(2, 0, 1).to(dtype=torch.float32) / 255.0
        batch[key] = tensor.unsqueeze(0)
    batch["task"] = [simulation.TASK]
    return batch


@torch.no_grad()
def evaluate_in_simulator(
    policy,
    preprocessor,
    postprocessor,
    dataset_root: str,
    num_episodes: int,
    seed: int = 0,
    max_steps: int = 200,
    progress: Callable[[str], None] | None = None,
) -> RolloutMetrics:
    """Run ``num_episodes`` rollouts from seeds never used in recording; return success rate and length."""
    meta = demo.read_demo_metadata(dataset_root)
    if meta is None:
        raise ValueError(
            f"closed-loop evaluation needs a dataset recorded from the simulator by lerobot_kfold.demo; "
            f"{dataset_root} has no {demo.DEMO_META_FILE}. Set sim_eval_episodes=0 for other datasets."
        )
    seeds = demo.evaluation_seeds(num_episodes, seed)
    reused = sorted(set(seeds) & set(meta["recording_seeds"]))
    if reused:
        raise ValueError(f"evaluation seeds {reused[:5]} were used in recording; pick another sim_eval_seed.")
    cameras = demo.recorded_cameras(meta)
    started = time.perf_counter()
    env = simulation.make_env(cameras)
    rig = None
    successes: list[bool] = []
    lengths: list[int] = []
    low = env.action_space.low
    high = env.action_space.high
    was_training = policy.training
    policy.eval()
    try:
        rig = simulation.CameraRig(env, cameras) if cameras is not None else None
        for n, episode_seed in enumerate(seeds, 1):
            obs, _ = env.reset(seed=episode_seed)
            policy.reset()
            success = False
            steps = 0
            while steps < max_steps:
                steps += 1
                batch = preprocessor(_observation_batch(obs, rig))
                action = postprocessor(policy.select_action(batch))
                action = np.clip(action.squeeze(0).cpu().numpy().astype(np.float32), low, high)
                obs, _, terminated, truncated, info = env.step(action)
                if info.get("succeed"):
                    success = True
                if terminated or truncated:
                    break
            successes.append(success)
            lengths.append(steps)
            if progress is not None:
                progress(
                    f"rollout {n}/{num_episodes}: {'success' if success else 'failure'} in {steps} steps"
                )
    finally:
        if rig is not None:
            rig.close()
        env.close()
        if was_training:
            policy.train()
    return RolloutMetrics(
        sim_success_rate=float(np.mean(successes)) if successes else 0.0,
        sim_mean_episode_length=float(np.mean(lengths)) if lengths else 0.0,
        sim_episodes=len(successes),
        sim_seeds=seeds,
        sim_successes=successes,
        sim_seconds=round(time.perf_counter() - started, 2),
    )
