"""What a fault test compares a resumed fold with: the same fold trained start to end, and its progress.

A fold that was killed (a Celery worker's kill -9, a Modal preemption) and resumed from its checkpoint
must end with exactly the metrics of a fold that never stopped. ``train_uninterrupted`` trains the same
fold configuration in a fresh process (the library's ``train_fold``, as the worker and Modal run it)
into another folder; ``progress_steps`` reads how far a fold got from its progress lines (the steps
after its last checkpoint are what the interruption lost).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

_STEP_LINE = re.compile(r"fold (\d+): step (\d+)/(\d+)")
_BODY = (
    "import json, sys; from lerobot_kfold import modal_app; "
    "print(json.dumps(modal_app.train_fold.local(config=json.load(sys.stdin))))"
)


def progress_steps(text: str, fold_id: int) -> list[int]:
    """The steps fold ``fold_id`` reported in ``text`` (a task log, a server's output), in order."""
    return [int(m.group(2)) for m in _STEP_LINE.finditer(text) if int(m.group(1)) == fold_id]


def train_uninterrupted(config: dict[str, Any], output_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """``config`` trained from step 0 into ``output_dir`` in a fresh Python (``env``: its storage root,
    PYTHONPATH); returns the fold's result as the DAG's XCom holds it."""
    done = subprocess.run(
        [sys.executable, "-c", _BODY],
        input=json.dumps({**config, "output_dir": str(output_dir)}),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the reference fold failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
