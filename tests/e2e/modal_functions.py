"""Function bodies the fake Modal control plane serves in the end-to-end tests.

``prepare_dataset`` and ``aggregate`` are the real app's bodies. ``train_fold`` is the real body too,
but when the DAG run id contains ``slow`` it first waits (without using a CPU) as a GPU container
would while starting: the window in which a test marks a deferred fold failed or clears it, or restarts
an Airflow component. ``slow`` waits 25 s, ``slowNN`` NN s. The markers of ``before_training`` shape
the runs of ``test_progress_cost.py``.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from lerobot_kfold import modal_app

SLOW_MARKER = "slow"
SLOW_SECONDS = 25.0
# The fake runs calls as threads of one process where Modal runs containers; lerobot's dataset loading
# (tqdm progress bars) is not thread-safe, so the bodies take turns. The waiting above stays parallel.
_ONE_AT_A_TIME = threading.Lock()


# Every fold of a "hold" run waits that long first (calls overlap); fold 0 of a "flaky" run fails its first
# call (its task goes up_for_retry); fold 1 of a "stall" run publishes nothing for STALL_SECONDS.
HOLD_MARKER, HOLD_SECONDS = "hold", 6.0
FLAKY_MARKER = "flaky"
STALL_MARKER, STALL_SECONDS = "stall", 20.0
_FAILED_ONCE: set[str] = set()


def before_training(config: dict[str, Any]) -> None:
    """What a run's markers make a fold's call do before it trains (nothing without a marker)."""
    run, fold = str(config.get("run_id")), config["fold_id"]
    if FLAKY_MARKER in run and fold == 0 and config["output_dir"] not in _FAILED_ONCE:
        _FAILED_ONCE.add(config["output_dir"])
        raise RuntimeError("flaky: the first call of fold 0 fails")
    if HOLD_MARKER in run:
        time.sleep(HOLD_SECONDS)
    if STALL_MARKER in run and fold == 1:
        time.sleep(STALL_SECONDS)


def train_fold(config: dict[str, Any]) -> dict[str, Any]:
    slow = re.search(rf"{SLOW_MARKER}(\d*)", str(config.get("run_id")))
    if slow:
        time.sleep(float(slow.group(1) or SLOW_SECONDS))
    before_training(config)
    with _ONE_AT_A_TIME:
        return modal_app.train_fold.local(config)


FUNCTIONS = {
    "lerobot-kfold/prepare_dataset": "lerobot_kfold.modal_app:prepare_dataset",
    "lerobot-kfold/train_fold": "tests.e2e.modal_functions:train_fold",
    "lerobot-kfold/aggregate": "lerobot_kfold.modal_app:aggregate",
}
