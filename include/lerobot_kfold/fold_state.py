"""What a fold's training knows beyond lerobot's own checkpoint: saved as ``fold_state.json`` in each one.

Why it exists: lerobot's checkpoint restores the model, optimizer, scheduler, RNG and step, but not
what k-fold adds on top (the learning curve, the best validation so far, the half-filled window of
training losses averaged at the next validation, time spent training). A resumed fold must end with
exactly the numbers of one that was never stopped, so all of it is saved with every checkpoint and read
back on resume. :class:`FoldState` owns that file: the training loop updates it through its methods
and never touches the JSON.

The file format is the one the trainer has always written (the same keys), so checkpoints from before
this module resume unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lerobot_kfold.atomic_io import write_json_atomic
from lerobot_kfold.validation import ValidationMetrics

FOLD_STATE_FILE = "fold_state.json"


@dataclass
class FoldState:
    """The k-fold bookkeeping of one fold's training run, as of its last completed step."""

    # The settings a checkpoint must match to be resumed (FoldTrainingConfig.resume_key()).
    resume_key: dict[str, Any]
    # One point per validation: {"step", "train_loss", "val_l1", "val_l1_normalized"}.
    learning_curve: list[dict[str, Any]] = field(default_factory=list)
    best_val_l1: float | None = None
    best_step: int | None = None
    best_val_mae_per_dim: list[float] | None = None
    last_validation: ValidationMetrics | None = None
    # Training losses since the last validation: their mean is the curve's train_loss at the next one.
    window_loss_sum: float = 0.0
    window_loss_count: int = 0
    last_train_loss: float | None = None
    # Seconds spent in the training loop over all runs of this fold (resumes add up).
    train_seconds: float = 0.0

    def record_train_loss(self, loss: float) -> None:
        self.window_loss_sum += loss
        self.window_loss_count += 1
        self.last_train_loss = loss

    def record_validation(self, step: int, metrics: ValidationMetrics) -> tuple[dict[str, Any], bool]:
        """Close the loss window, add a learning-curve point; returns it and whether it is the new best."""
        train_loss = self.window_loss_sum / max(self.window_loss_count, 1)
        self.window_loss_sum, self.window_loss_count = 0.0, 0
        point = {
            "step": step,
            "train_loss": train_loss,
            "val_l1": metrics.val_l1,
            "val_l1_normalized": metrics.val_l1_normalized,
        }
        self.learning_curve.append(point)
        improved = self.best_val_l1 is None or metrics.val_l1 < self.best_val_l1
        if improved:
            self.best_val_l1 = metrics.val_l1
            self.best_step = step
            self.best_val_mae_per_dim = metrics.val_mae_per_dim
        self.last_validation = metrics
        return point, improved

    def add_train_seconds(self, seconds: float) -> None:
        self.train_seconds = self.train_seconds + seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "resume_key": self.resume_key,
            "learning_curve": self.learning_curve,
            "best_val_l1": self.best_val_l1,
            "best_step": self.best_step,
            "window_loss_sum": self.window_loss_sum,
            "window_loss_count": self.window_loss_count,
            "last_train_loss": self.last_train_loss,
            "train_seconds": self.train_seconds,
            "best_val_mae_per_dim": self.best_val_mae_per_dim,
            "last_validation": None if self.last_validation is None else self.last_validation.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> FoldState:
        """Read the JSON form; optional keys may be absent (a checkpoint saved before any validation)."""
        where = f"{source}: " if source is not None else ""
        if not isinstance(data, dict) or data.get("resume_key") is None:
            raise ValueError(
                f"{where}not a fold state (no 'resume_key'); this checkpoint was not written by "
                "lerobot_kfold. Use a new output folder, or delete this one to start over."
            )
        last = data.get("last_validation")
        return cls(
            resume_key=data["resume_key"],
            learning_curve=list(data.get("learning_curve") or []),
            best_val_l1=data.get("best_val_l1"),
            best_step=data.get("best_step"),
            best_val_mae_per_dim=data.get("best_val_mae_per_dim"),
            last_validation=None if not last else ValidationMetrics.from_dict(last),
            window_loss_sum=data.get("window_loss_sum", 0.0),
            window_loss_count=data.get("window_loss_count", 0),
            last_train_loss=data.get("last_train_loss"),
            train_seconds=data.get("train_seconds", 0.0),
        )

    def save(self, checkpoint_dir: Path) -> Path:
        """Write ``fold_state.json`` into ``checkpoint_dir`` (atomically)."""
        return write_json_atomic(Path(checkpoint_dir) / FOLD_STATE_FILE, self.to_dict())

    @classmethod
    def load(cls, checkpoint_dir: Path) -> FoldState:
        path = Path(checkpoint_dir) / FOLD_STATE_FILE
        return cls.from_dict(json.loads(path.read_text()), source=path)
