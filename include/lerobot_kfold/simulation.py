"""The SO-101 pick-and-place simulator: one place that knows how to build it, render it and read it.

Why a module of its own: the demo recorder and the closed-loop evaluation must see the *same*
environment (same action scale, same randomisation, same observation layout, same cameras at the same
size and quality), or a policy trained on recorded data would be evaluated on a different task. Both
go through :func:`make_env`, :class:`CameraRig` and :func:`observation_to_frame`.

Cameras: ``front`` is the scene's own fixed camera. ``wrist`` is a close-up view that follows the
gripper (a MuJoCo tracking camera: the scene has no camera mounted on the wrist, so it follows the
gripper's position, not its rotation). Both render through one offscreen renderer with
:func:`lerobot_kfold.rendering.use_fast_rendering` quality and the scene's meshes simplified below half a
pixel (:func:`lerobot_kfold.rendering.reduced_detail_model`): about 10x cheaper per frame in software GL,
the physics untouched. The goal position is not drawn in the scene (the simulator has no goal marker),
which is why camera datasets keep ``observation.environment_state``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lerobot_kfold.rendering import RenderingUnavailableError

__all__ = ["RenderingUnavailableError"]

# The expert's task string: every recorded frame carries it, and the policy sees it at evaluation.
TASK = "Pick up the block and place it on the goal."
ENV_ID = "lerobot_env_so101/SO101PickPlace-v0"
FPS = 10  # the simulator's control_dt is 0.1 s
MAX_EPISODE_STEPS = 300
ENVIRONMENT_STATE_NAMES = ["block_x", "block_y", "block_z", "goal_x", "goal_y", "goal_z"]
ACTION_NAMES = ["dx", "dy", "dz", "grasp"]
CAMERA_PREFIX = "observation.images."
CAMERAS = ("front", "wrist")
# The wrist view: a tracking camera on the gripper body, this far away, looking down at the jaw.
WRIST_BODY = "gripper"
WRIST_DISTANCE_M = 0.28
WRIST_AZIMUTH_DEG = 180.0
WRIST_ELEVATION_DEG = -55.0
# Distance from the front camera to the workspace, for the mesh detail a frame can show.
FRONT_DISTANCE_M = 0.8
MAX_SIDE = 1080


def camera_key(camera: str) -> str:
    """The LeRobot feature name of a camera: ``observation.images.<camera>``."""
    return f"{CAMERA_PREFIX}{camera}"


@dataclass(frozen=True)
class CameraSpec:
    """Which cameras the simulator renders, and their size (one size for all of them)."""

    cameras: tuple[str, ...] = ("front",)
    # Small by default: CPU tests and demos. Real robot datasets are 480x640.
    height: int = 96
    width: int = 128

    def __post_init__(self) -> None:
        cameras = tuple(self.cameras)
        object.__setattr__(self, "cameras", cameras)
        unknown = sorted(set(cameras) - set(CAMERAS))
        if not cameras or unknown or len(set(cameras)) != len(cameras):
            raise ValueError(
                f"cameras must be one or more distinct names of {list(CAMERAS)}, got {list(cameras)}"
            )
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= MAX_SIDE:
                raise ValueError(
                    f"camera {name} must be an integer from 16 to {MAX_SIDE} pixels, got {value!r}"
                )

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(camera_key(c) for c in self.cameras)

    def to_dict(self) -> dict[str, Any]:
        return {"cameras": list(self.cameras), "height": self.height, "width": self.width}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CameraSpec:
        return cls(cameras=tuple(data["cameras"]), height=int(data["height"]), width=int(data["width"]))

    @classmethod
    def parse(cls, cameras: str | Sequence[str], size: str | None = None) -> CameraSpec:
        """From command-line text: ``"front,wrist"`` and ``"96x128"`` (height x width)."""
        names = [c.strip() for c in cameras.split(",")] if isinstance(cameras, str) else list(cameras)
        if size is None:
            return cls(cameras=tuple(names))
        try:
            height, width = (int(part) for part in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"image size must be HEIGHTxWIDTH such as 96x128, got {size!r}") from None
        return cls(cameras=tuple(names), height=height, width=width)


def state_names() -> list[str]:
    """Names of the 14 ``agent_pos`` entries, in the simulator's own order."""
    from lerobot_env_so101.policy import OBS_FIELD_NAMES

    return list(OBS_FIELD_NAMES[:14])


def make_env(cameras: CameraSpec | None = None) -> Any:
    """Build the randomised pick-and-place environment at the scale the scripted expert expects.

    ``random_block_position=True`` draws a new block and goal position from each reset seed, which is
    what makes recording seeds and evaluation seeds different tasks. A headless GL backend is chosen
    first (``rendering.choose_gl_backend``: it must run before mujoco is imported; with ``cameras`` a
    machine without one fails here) and the offscreen buffer is sized for the cameras; render with
    :class:`CameraRig`.
    """
    from lerobot_kfold.rendering import choose_gl_backend, choose_gl_backend_early

    if cameras is not None:
        choose_gl_backend()
    else:  # mujoco fixes its GL backend at import, and a camera env may follow in this process
        choose_gl_backend_early()
    import gymnasium as gym
    import lerobot_env_so101  # noqa: F401  (registers the gym ids)
    from lerobot_env_so101.mujoco_env import GymRenderingSpec
    from lerobot_env_so101.policy import DEFAULT_ACTION_SCALE

    kwargs: dict[str, Any] = {}
    if cameras is not None:
        kwargs["render_spec"] = GymRenderingSpec(height=cameras.height, width=cameras.width)
    return gym.make(
        ENV_ID,
        random_block_position=True,
        action_scale=DEFAULT_ACTION_SCALE,
        max_episode_steps=MAX_EPISODE_STEPS,
        disable_env_checker=True,
        **kwargs,
    )


class CameraRig:
    """Renders the configured cameras of one environment's current state, as HWC uint8 frames.

    It keeps its own render model (the scene with meshes simplified below half a pixel, fast quality)
    and copies the simulator's joint positions into it before each frame: the physics model is never
    touched. Creating it renders one frame, so a machine without OpenGL fails here with
    :class:`RenderingUnavailableError` (install advice included), not in the middle of a recording.
    """

    def __init__(self, env: Any, spec: CameraSpec):
        import mujoco

        from lerobot_kfold import rendering

        self.spec = spec
        self._sim = env.unwrapped
        pixel = 2 * math.tan(math.radians(45 / 2)) / spec.height
        nearest = WRIST_DISTANCE_M if "wrist" in spec.cameras else FRONT_DISTANCE_M
        self._model = rendering.reduced_detail_model(self._sim.model, cell_m=nearest * pixel / 2)
        self._data = mujoco.MjData(self._model)
        self._renderer = None
        self._cameras = {camera_key(c): self._camera(c) for c in spec.cameras}
        try:
            self._renderer = mujoco.Renderer(self._model, height=spec.height, width=spec.width)
            self.render()
        except Exception as exc:  # MuJoCo raises several types when no GL platform exists.
            self.close()
            raise RenderingUnavailableError(
                f"camera images need an OpenGL context for MuJoCo, and none could be created ({exc}). "
                f"Install one: {rendering.install_hint()}; or record without cameras."
            ) from exc

    def _camera(self, name: str) -> Any:
        import mujoco

        if name == "front":
            return mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_CAMERA, "front")
        camera = mujoco.MjvCamera()
        camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        camera.trackbodyid = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_BODY, WRIST_BODY)
        camera.distance = WRIST_DISTANCE_M
        camera.azimuth = WRIST_AZIMUTH_DEG
        camera.elevation = WRIST_ELEVATION_DEG
        return camera

    def render(self) -> dict[str, np.ndarray]:
        """One frame per camera of the simulator's current state (feature name -> HWC uint8)."""
        import mujoco

        self._data.qpos[:] = self._sim.data.qpos
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_comPos(self._model, self._data)
        mujoco.mj_camlight(self._model, self._data)
        frames = {}
        for key, camera in self._cameras.items():
            # A tracking camera looks at its body's subtree centre of mass (mj_comPos) of this state.
            self._renderer.update_scene(self._data, camera=camera)
            frames[key] = np.asarray(self._renderer.render(), dtype=np.uint8).copy()
        return frames

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def observation_to_frame(obs: dict[str, np.ndarray], rig: CameraRig | None = None) -> dict[str, Any]:
    """Turn a simulator observation into LeRobot feature values (without action or task)."""
    frame: dict[str, Any] = {
        "observation.state": np.asarray(obs["agent_pos"], dtype=np.float32),
        "observation.environment_state": np.asarray(obs["environment_state"], dtype=np.float32),
    }
    if rig is not None:
        frame.update(rig.render())
    return frame


def lerobot_features(cameras: CameraSpec | None, dtype: str = "video") -> dict[str, dict[str, Any]]:
    """The LeRobot feature spec of a recorded demo dataset; cameras as ``dtype`` (video or image)."""
    features: dict[str, dict[str, Any]] = {
        "observation.state": {"dtype": "float32", "shape": (14,), "names": state_names()},
        "observation.environment_state": {
            "dtype": "float32",
            "shape": (len(ENVIRONMENT_STATE_NAMES),),
            "names": ENVIRONMENT_STATE_NAMES,
        },
        "action": {"dtype": "float32", "shape": (len(ACTION_NAMES),), "names": ACTION_NAMES},
    }
    for key in cameras.keys if cameras is not None else ():
        features[key] = {
            "dtype": dtype,
            "shape": (cameras.height, cameras.width, 3),
            "names": ["height", "width", "channels"],
        }
    return features


def block_and_goal(obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Block and goal positions from a state observation (``environment_state`` is block then goal)."""
    state = np.asarray(obs["environment_state"], dtype=np.float64)
    return state[:3], state[3:6]
