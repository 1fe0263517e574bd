"""Function bodies the fake Modal control plane serves in ``bench/celery_faults.py``.

Two kinds of run share one plane: runs on ``datasets/fanout_synthetic`` get the fan-out stand-ins of
``fanout_functions`` (no dataset; a fold call sleeps ``FANOUT_FOLD_SECONDS`` and costs no CPU), the
faults that need no training; runs on a real dataset get the real app's bodies (the preemption fault
trains a fold and resumes it from its checkpoint). ``aggregate`` is always the real one.
"""

from __future__ import annotations

import threading
from typing import Any

import fanout_functions

from lerobot_kfold import modal_app

SYNTHETIC = "fanout_synthetic"
# The plane runs calls as threads of one process; lerobot's dataset loading is not thread-safe, so real
# trainings take turns (the sleeping stand-ins stay parallel).
_ONE_AT_A_TIME = threading.Lock()


def prepare_dataset(dataset_root: str = "", **kwargs: Any) -> dict[str, Any]:
    if SYNTHETIC in dataset_root:
        return fanout_functions.prepare_dataset(dataset_root, **kwargs)
    return modal_app.prepare_dataset.local(dataset_root=dataset_root, **kwargs)


def train_fold(config: dict[str, Any]) -> dict[str, Any]:
    if SYNTHETIC in str(config.get("dataset_root")):
        return fanout_functions.train_fold(config)
    with _ONE_AT_A_TIME:
        return modal_app.train_fold.local(config)
