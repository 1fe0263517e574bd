"""Record the demo dataset: SO-101 pick-and-place episodes driven by the simulator's scripted expert.

Why: anyone must be able to try a k-fold run in minutes, offline, on data from a real simulator. The
scripted expert solves every seed tried in ~47 control steps; we record its observations and actions
as a LeRobot v3 dataset, one random block and goal position per episode.

Each episode's reset seed is ``seed * 1_000_000 + i`` (skipping any seed where the expert fails) and
is written to ``meta/kfold_demo.json``, so closed-loop evaluation can prove it uses unseen seeds.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lerobot_kfold import simulation
from lerobot_kfold.atomic_io import write_json_atomic

log = logging.getLogger(__name__)

DEMO_META_FILE = "meta/kfold_demo.json"
# Recording seeds live in [seed * SEED_STRIDE, (seed + 1) * SEED_STRIDE); evaluation seeds start at
# EVAL_SEED_OFFSET, far above any recording seed, so the two sets never meet.
SEED_STRIDE = 1_000_000
EVAL_SEED_OFFSET = 2_000_000_000


@dataclass
class DemoConfig:
    """What to record. Validates itself so bad input fails before the simulator starts."""

    # Folder to create the dataset in. It must not exist yet (LeRobotDataset.create refuses).
    root: Path
    # Number of successful expert episodes to record.
    num_episodes: int = 40
    # Seed of the recording: the same seed gives the same episodes, bit for bit.
    seed: int = 0
    # Dataset identifier written into the metadata (never pushed anywhere).
    repo_id: str = "local/so101_pick_place_demo"
    # Frames to keep recording after the expert succeeds (the jaw opens, the arm lifts), so the last
    # action chunks of an episode are real actions rather than padding.
    extra_frames_after_success: int = 10
    # Cameras to record as video features (lerobot's own writer); None: state only. Rendering needs a
    # headless OpenGL library (EGL or OSMesa, see lerobot_kfold.rendering).
    cameras: simulation.CameraSpec | None = None
    # Give up after this many expert failures in a row (the expert should never fail).
    max_failed_attempts: int = 20
    # lerobot's video encoding on a thread while the next frames render (``streaming_encoding``).
    streaming_encoding: bool = True

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.num_episodes < 1:
            raise ValueError(f"num_episodes must be at least 1, got {self.num_episodes}.")
        if self.num_episodes >= SEED_STRIDE:
            raise ValueError(f"num_episodes must be below {SEED_STRIDE}, got {self.num_episodes}.")
        if not 0 <= self.seed < EVAL_SEED_OFFSET // SEED_STRIDE:
            raise ValueError(f"seed must be in [0, {EVAL_SEED_OFFSET // SEED_STRIDE}), got {self.seed}.")
        if self.extra_frames_after_success < 0:
            raise ValueError("extra_frames_after_success must be >= 0.")
        if self.root.exists():
            raise ValueError(
                f"dataset root {self.root} already exists; choose a new folder or delete this one first."
            )


@dataclass(frozen=True)
class RecordedEpisode:
    seed: int
    frames: int
    success_step: int


def _record_episode(env, rig, seed: int, config: DemoConfig) -> tuple[int | None, list[dict]]:
    """Run the expert from ``seed``. Returns the step at which it succeeded (None if it failed) and
    the frames; a failed attempt is dropped whole, never saved as a half demonstration."""
    from lerobot_env_so101.policy import DEFAULT_ACTION_SCALE
    from lerobot_env_so101.scripted.pick_place import PickPlaceController

    controller = PickPlaceController(action_scale=DEFAULT_ACTION_SCALE)
    obs, _ = env.reset(seed=seed)
    frames: list[dict] = []
    success_step: int | None = None
    for step in range(simulation.MAX_EPISODE_STEPS):
        block, goal = simulation.block_and_goal(obs)
        action = controller.act(env.unwrapped.ik_point_pos, block, goal)
        frame = simulation.observation_to_frame(obs, rig)
        frame["action"] = np.asarray(action, dtype=np.float32)
        frame["task"] = simulation.TASK
        frames.append(frame)
        # Step the unwrapped env: after success we keep recording, which the TimeLimit/Order wrappers
        # would refuse once the episode has terminated.
        obs, _, _, _, info = env.unwrapped.step(action)
        if success_step is None and info.get("succeed"):
            success_step = step
        if success_step is not None and step - success_step >= config.extra_frames_after_success:
            break
    return success_step, frames


def record_demo_dataset(config: DemoConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Record ``config.num_episodes`` expert episodes into a new LeRobot dataset at ``config.root``.

    The dataset is built in a temporary sibling folder and renamed into place at the end, so an
    interrupted recording never leaves a half-written dataset behind at ``root``. Cameras are written
    by lerobot's own writer as video features (its default encoder: AV1, ``g=2``), as lerobot records
    a real robot. Returns a JSON-serializable summary (root, episodes, frames, seeds, seconds).
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    started = time.perf_counter()
    env = simulation.make_env(config.cameras)
    rig = None
    dataset = None
    staging = config.root.with_name(f".{config.root.name}.recording")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        rig = simulation.CameraRig(env, config.cameras) if config.cameras is not None else None
        dataset = LeRobotDataset.create(
            repo_id=config.repo_id,
            fps=simulation.FPS,
            root=staging,
            features=simulation.lerobot_features(config.cameras),
            robot_type="so101_sim",
            use_videos=config.cameras is not None,
            streaming_encoding=config.streaming_encoding and config.cameras is not None,
        )
        episodes, failures = _record_episodes(dataset, env, rig, config, progress)
        dataset.finalize()
        summary = _summary(config, episodes, failures)
        write_json_atomic(staging / DEMO_META_FILE, summary)
        staging.rename(config.root)
    except BaseException:
        if dataset is not None:  # stop lerobot's encoder threads before the staging folder goes
            with contextlib.suppress(Exception):
                dataset.writer.cancel_pending_videos()
                dataset.finalize()
        raise
    finally:
        if rig is not None:
            rig.close()
        env.close()
        shutil.rmtree(staging, ignore_errors=True)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def _record_episodes(
    dataset, env, rig, config: DemoConfig, progress: Callable[[str], None] | None
) -> tuple[list[RecordedEpisode], list[int]]:
    """Successful expert episodes from consecutive seeds, each saved as one dataset episode."""
    episodes: list[RecordedEpisode] = []
    failures: list[int] = []
    seed = config.seed * SEED_STRIDE
    while len(episodes) < config.num_episodes:
        success_step, frames = _record_episode(env, rig, seed, config)
        if success_step is None:
            failures.append(seed)
            if len(failures) >= config.max_failed_attempts:
                raise RuntimeError(f"the scripted expert failed on {len(failures)} seeds: {failures}")
        else:
            for frame in frames:
                dataset.add_frame(frame)
            dataset.save_episode()
            episodes.append(RecordedEpisode(seed=seed, frames=len(frames), success_step=success_step))
            if progress is not None:
                n = len(episodes)
                progress(f"recorded episode {n}/{config.num_episodes} (seed {seed}, {len(frames)} frames)")
        seed += 1
    return episodes, failures


def _summary(config: DemoConfig, episodes: list[RecordedEpisode], failures: list[int]) -> dict:
    """The recording summary, also written to ``meta/kfold_demo.json`` (rollouts read it)."""
    return {
        "root": str(config.root),
        "repo_id": config.repo_id,
        "num_episodes": len(episodes),
        "num_frames": sum(e.frames for e in episodes),
        "fps": simulation.FPS,
        "task": simulation.TASK,
        "env_id": simulation.ENV_ID,
        "cameras": None if config.cameras is None else config.cameras.to_dict(),
        "recording_seeds": [e.seed for e in episodes],
        "expert_failed_seeds": failures,
        "success_steps": [e.success_step for e in episodes],
        "extra_frames_after_success": config.extra_frames_after_success,
    }


def recorded_cameras(meta: dict) -> simulation.CameraSpec | None:
    """The cameras a demo dataset was recorded with (``with_images`` datasets: a 64x64 front image)."""
    if meta.get("cameras"):
        return simulation.CameraSpec.from_dict(meta["cameras"])
    if meta.get("with_images"):
        return simulation.CameraSpec(cameras=("front",), height=64, width=64)
    return None


def read_demo_metadata(root: str | Path) -> dict | None:
    """The recording summary of a demo dataset, or None for a dataset not recorded by this module."""
    import json

    path = Path(root) / DEMO_META_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def evaluation_seeds(num_episodes: int, seed: int = 0) -> list[int]:
    """Seeds for closed-loop evaluation: disjoint from every recording seed by construction."""
    start = EVAL_SEED_OFFSET + seed * SEED_STRIDE
    return list(range(start, start + num_episodes))
