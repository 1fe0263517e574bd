"""Shared test set-up: offline, caches inside the repo, one small demo dataset per session."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Set before lerobot or datasets are imported anywhere: no test may reach a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", str(REPO / ".cache" / "huggingface"))
os.environ.setdefault("HF_LEROBOT_HOME", str(REPO / ".cache" / "huggingface" / "lerobot"))
os.environ.setdefault("MPLCONFIGDIR", str(REPO / ".cache" / "matplotlib"))
os.environ.setdefault("WANDB_DIR", str(REPO / ".cache" / "wandb"))
# torchvision's pretrained weights: the project's cache, never a download (tests set pretrained_backbone
# false, or point TORCH_HOME at a folder of their own).
os.environ.setdefault("TORCH_HOME", str(REPO / ".cache" / "torch"))
# Airflow reads its configuration when first imported: a private home and SQLite database for the tests,
# this project's dags and plugins, no examples.
os.environ["AIRFLOW_HOME"] = str(REPO / ".cache" / "airflow-tests")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
# Ambient Modal credentials never reach a test: each test points the client at its fake control plane.
for _name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_SERVER_URL", "MODAL_PROFILE"):
    os.environ.pop(_name, None)

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from lerobot_kfold.rendering import choose_gl_backend_early  # noqa: E402

# MuJoCo fixes its GL backend when first imported: choose a headless one before any test imports it,
# so camera tests work in a session whose earlier tests imported mujoco for state-only work.
choose_gl_backend_early()

DEMO_EPISODES = 12
# The camera demo of the tests: few episodes, small frames, both cameras (every camera path sees two).
CAMERA_EPISODES = 8
CAMERA_SIZE = (48, 64)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-episode demo dataset recorded from the simulator (read-only for tests: copy to modify)."""
    from lerobot_kfold.demo import DemoConfig, record_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "so101_demo"
    record_demo_dataset(DemoConfig(root=root, num_episodes=DEMO_EPISODES, seed=0))
    return root


@pytest.fixture(scope="session")
def camera_demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-episode camera demo dataset (front and wrist video, 48x64) recorded from the simulator."""
    from lerobot_kfold.demo import DemoConfig, record_demo_dataset
    from lerobot_kfold.simulation import CameraSpec

    root = tmp_path_factory.mktemp("camera_demo") / "so101_camera_demo"
    cameras = CameraSpec(cameras=("front", "wrist"), height=CAMERA_SIZE[0], width=CAMERA_SIZE[1])
    record_demo_dataset(DemoConfig(root=root, num_episodes=CAMERA_EPISODES, seed=0, cameras=cameras))
    return root


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in the tests' Airflow home (for dag.test and connections)."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )
    return home
