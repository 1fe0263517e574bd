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

import pytest  # noqa: E402

DEMO_EPISODES = 12


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-episode demo dataset recorded from the simulator (read-only for tests: copy to modify)."""
    from lerobot_kfold.demo import DemoConfig, record_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "so101_demo"
    record_demo_dataset(DemoConfig(root=root, num_episodes=DEMO_EPISODES, seed=0))
    return root
