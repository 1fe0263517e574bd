"""Function bodies the fake Modal control plane (``scripts/fake_modal``) serves in ``bench/fanout.py``.

Stand-ins that cost no CPU, so the benchmark measures Airflow's fan-out and nothing else:

- ``prepare_dataset``: synthetic episode metadata of the keys ``lerobot_kfold.jobs.prepare_dataset``
  returns (``FANOUT_EPISODES`` episodes, default 128: enough for k = 64), without any dataset.
- ``train_fold``: sleeps ``FANOUT_FOLD_SECONDS`` (a GPU fold of T seconds), then writes a plausible
  ``result.json`` (a ``lerobot_kfold.results.FoldResult``) into the fold's folder in storage, as the real
  fold does, and returns it without its per-episode and per-step lists.
- ``aggregate`` is the real app's (``lerobot_kfold.modal_app:aggregate``): it reads those result files
  and writes the summary and report.
"""

from __future__ import annotations

import os
import time
from typing import Any

from lerobot_kfold import jobs, storage
from lerobot_kfold.atomic_io import write_json_atomic
from lerobot_kfold.results import FoldResult

FOLD_SECONDS_ENV = "FANOUT_FOLD_SECONDS"
EPISODES_ENV = "FANOUT_EPISODES"
FPS = 30
EPISODE_LENGTH = 300


def prepare_dataset(dataset_root: str = "", repo_id: str = "", **_others: Any) -> dict[str, Any]:
    num_episodes = int(os.environ.get(EPISODES_ENV, "128"))
    tasks = ("pick the cube", "place the cube")
    episodes = [
        {"index": i, "task": tasks[i % len(tasks)], "length": EPISODE_LENGTH + (i % 7)}
        for i in range(num_episodes)
    ]
    return {
        "dataset_root": dataset_root or "datasets/fanout_synthetic",
        "repo_id": repo_id or "local/fanout_synthetic",
        "fingerprint": f"fanout-{num_episodes}",
        "num_episodes": num_episodes,
        "fps": FPS,
        "features": ["action", "observation.state"],
        "episodes": episodes,
    }


def train_fold(config: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    time.sleep(float(os.environ.get(FOLD_SECONDS_ENV, "60")))
    wall = round(time.perf_counter() - started, 3)
    fold_id, steps = int(config.get("fold_id", 0)), int(config.get("steps", 0))
    val_l1 = 0.05 + 0.001 * (fold_id % 10)
    output_dir = storage.resolve(config["output_dir"])
    result = FoldResult(
        fold_id=fold_id,
        repeat=int(config.get("repeat", 0)),
        index=int(config.get("fold_index", 0)),
        status="ok",
        train_episodes=config.get("train_episodes"),
        val_episodes=config.get("val_episodes"),
        steps=steps,
        steps_this_run=steps,
        wall_s=wall,
        train_seconds=wall,
        steps_per_s=round(steps / wall, 3) if wall > 0 else None,
        device="cuda",
        final_train_loss=0.1,
        metrics={"val_l1": val_l1, "val_l1_normalized": 10 * val_l1, "best_val_l1": val_l1},
        best_step=steps,
        output_dir=str(output_dir),
    ).to_dict()
    write_json_atomic(output_dir / jobs.RESULT_FILE, result)
    # What goes back to the orchestrator (XCom): the result without its per-episode and per-step lists.
    compact = {
        k: v for k, v in result.items() if k not in ("train_episodes", "val_episodes", "learning_curve")
    }
    return {**compact, "output_dir": config["output_dir"]}
