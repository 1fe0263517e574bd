"""The SO-101 pick-and-place simulator: one place that knows how to build it and read it.

Why a module of its own: the demo recorder and the closed-loop evaluation must see the *same*
environment (same action scale, same randomisation, same observation layout), or a policy trained on
recorded data would be evaluated on a different task. Both go through :func:`make_env` and
:func:`observation_to_frame`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

# The expert's task string: every recorded frame carries it, and the policy sees it at evaluation.
TASK = "Pick up the block and place it on the goal."
ENV_ID = "lerobot_env_so101/SO101PickPlace-v0"
FPS = 10  # the simulator's control_dt is 0.1 s
MAX_EPISODE_STEPS = 300
ENVIRONMENT_STATE_NAMES = ["block_x", "block_y", "block_z", "goal_x", "goal_y", "goal_z"]
ACTION_NAMES = ["dx", "dy", "dz", "grasp"]
IMAGE_KEY = "observation.images.front"


class RenderingUnavailableError(RuntimeError):
    """Camera images were asked for but MuJoCo has no OpenGL context on this machine."""


@dataclass(frozen=True)
class ImageSpec:
    """Size of the optional camera image, kept small: it exists to exercise vision policies."""

    height: int = 64
    width: int = 64


def state_names() -> list[str]:
    """Names of the 14 ``agent_pos`` entries, in the simulator's own order."""
    from lerobot_env_so101.policy import OBS_FIELD_NAMES

    return list(OBS_FIELD_NAMES[:14])


def make_env(image: ImageSpec | None = None) -> Any:
    """Build the randomised pick-and-place environment at the scale the scripted expert expects.

    ``random_block_position=True`` draws a new block and goal position from each reset seed, which is
    what makes recording seeds and evaluation seeds different tasks.
    """
    import gymnasium as gym
    import lerobot_env_so101  # noqa: F401  (registers the gym ids)
    from lerobot_env_so101.mujoco_env import GymRenderingSpec
    from lerobot_env_so101.policy import DEFAULT_ACTION_SCALE

    kwargs: dict[str, Any] = {}
    if image is not None:
        kwargs["render_spec"] = GymRenderingSpec(height=image.height, width=image.width)
    env = gym.make(
        ENV_ID,
        random_block_position=True,
        action_scale=DEFAULT_ACTION_SCALE,
        max_episode_steps=MAX_EPISODE_STEPS,
        disable_env_checker=True,
        **kwargs,
    )
    if image is not None:
        try:
            env.reset(seed=0)
            env.unwrapped.render()
        except Exception as exc:  # MuJoCo raises several types when no GL platform exists.
            env.close()
            raise RenderingUnavailableError(
                "camera images need an OpenGL context for MuJoCo, and none could be created "
                f"(MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')}: {exc}). Install OSMesa or EGL "
                "(for example 'apt-get install libosmesa6' and MUJOCO_GL=osmesa), or record without images."
            ) from exc
    return env


def observation_to_frame(env: Any, obs: dict[str, np.ndarray], image: ImageSpec | None) -> dict[str, Any]:
    """Turn a simulator observation into LeRobot feature values (without action or task)."""
    frame: dict[str, Any] = {
        "observation.state": np.asarray(obs["agent_pos"], dtype=np.float32),
        "observation.environment_state": np.asarray(obs["environment_state"], dtype=np.float32),
    }
    if image is not None:
        frame[IMAGE_KEY] = np.asarray(env.unwrapped.render(), dtype=np.uint8)
    return frame


def lerobot_features(image: ImageSpec | None) -> dict[str, dict[str, Any]]:
    """The LeRobot feature spec of a recorded demo dataset."""
    features: dict[str, dict[str, Any]] = {
        "observation.state": {"dtype": "float32", "shape": (14,), "names": state_names()},
        "observation.environment_state": {
            "dtype": "float32",
            "shape": (len(ENVIRONMENT_STATE_NAMES),),
            "names": ENVIRONMENT_STATE_NAMES,
        },
        "action": {"dtype": "float32", "shape": (len(ACTION_NAMES),), "names": ACTION_NAMES},
    }
    if image is not None:
        features[IMAGE_KEY] = {
            "dtype": "image",
            "shape": (image.height, image.width, 3),
            "names": ["height", "width", "channels"],
        }
    return features


def block_and_goal(obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Block and goal positions from a state observation (``environment_state`` is block then goal)."""
    state = np.asarray(obs["environment_state"], dtype=np.float64)
    return state[:3], state[3:6]
