"""Resumable fold checkpoints, written with lerobot's own checkpoint format.

Layout under a fold's output folder::

    checkpoints/000500/pretrained_model/   policy, processors, train_config.json (lerobot's format)
    checkpoints/000500/training_state/     optimizer, scheduler, RNG, step (lerobot's format)
    checkpoints/000500/fold_state.json     learning curve, best validation so far, loss window
    checkpoints/last -> 000500             the checkpoint a resumed run starts from
    best/pretrained_model/                 policy and processors at the best validation step

Why this matters: Modal preempts GPU containers and Airflow retries failed tasks. Both re-run the fold
on the same output folder, and the run must continue from the last checkpoint rather than pay for the
steps again. Each checkpoint is staged in a temporary folder and renamed into place, and ``last`` is
swapped atomically, so a crash mid-save leaves the previous checkpoint intact and ``last`` valid.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lerobot_kfold.atomic_io import atomic_path
from lerobot_kfold.fold_state import FOLD_STATE_FILE, FoldState

CHECKPOINTS = "checkpoints"
LAST = "last"
BEST = "best"
FOLD_STATE = FOLD_STATE_FILE
PRETRAINED_MODEL = "pretrained_model"


def step_dir_name(step: int) -> str:
    return f"{step:06d}"


def save_checkpoint(
    output_dir: Path,
    step: int,
    train_config,
    policy,
    optimizer,
    scheduler,
    preprocessor,
    postprocessor,
    fold_state: FoldState,
    batch_size: int,
    keep_last: int = 1,
) -> Path:
    """Write a full resumable checkpoint for ``step`` and point ``last`` at it."""
    from lerobot.common.train_utils import save_checkpoint as lerobot_save_checkpoint

    root = output_dir / CHECKPOINTS
    target = root / step_dir_name(step)
    with atomic_path(target) as staging:
        lerobot_save_checkpoint(
            checkpoint_dir=staging,
            step=step,
            cfg=train_config,
            policy=policy,
            optimizer=optimizer,
            scheduler=scheduler,
            preprocessor=preprocessor,
            postprocessor=postprocessor,
            num_processes=1,
            batch_size=batch_size,
        )
        fold_state.save(staging)
    _point_last_at(root, target.name)
    _prune(root, keep_last)
    return target


def _point_last_at(root: Path, name: str) -> None:
    """Swap the ``last`` symlink in one rename, so it is never missing or dangling."""
    tmp_link = root / f".{LAST}.tmp"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    tmp_link.symlink_to(name)
    os.replace(tmp_link, root / LAST)


def _prune(root: Path, keep_last: int) -> None:
    """Delete step checkpoints older than the newest ``keep_last`` (disk on a Volume costs money)."""
    steps = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and p.name.isdigit())
    current = (root / LAST).resolve()
    for old in steps[:-keep_last] if keep_last > 0 else []:
        if old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)


def last_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint a resumed run should start from, or None for a fresh run."""
    link = output_dir / CHECKPOINTS / LAST
    if not link.is_symlink():
        return None
    target = link.resolve()
    if not (target / FOLD_STATE).is_file() or not (target / PRETRAINED_MODEL).is_dir():
        return None
    return target


def read_fold_state(checkpoint_dir: Path) -> FoldState:
    return FoldState.load(checkpoint_dir)


def save_pretrained(target: Path, policy, preprocessor, postprocessor) -> Path:
    """Save policy and processors (loadable with lerobot's from_pretrained) atomically at ``target``."""
    with atomic_path(target) as staging:
        policy.save_pretrained(staging)
        preprocessor.save_pretrained(staging)
        postprocessor.save_pretrained(staging)
    return target


def best_model_dir(output_dir: Path) -> Path:
    return output_dir / BEST / PRETRAINED_MODEL
