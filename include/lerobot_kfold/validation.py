"""Offline validation of a policy on the held-out episodes of its fold.

Three views of the same predictions:

- ``val_l1``: mean absolute action error in *action units* (unnormalized, padding masked). Each fold
  normalizes with its own training statistics, so normalized errors differ in scale between folds;
  only action units are comparable across folds, which is what an average over folds needs.
- ``val_l1_normalized``: the number ``lerobot-train --eval_steps`` logs (the policy's loss in eval mode,
  averaged over batches), kept so results can be compared with lerobot's own logs.
- ``val_mae_per_dim``: the action-unit error of each action dimension (which joint or gripper is off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

ACTION = "action"
ACTION_PAD = "action_is_pad"


@dataclass
class ValidationMetrics:
    val_l1: float
    val_l1_normalized: float
    val_mae_per_dim: list[float]
    num_frames: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "val_l1": self.val_l1,
            "val_l1_normalized": self.val_l1_normalized,
            "val_mae_per_dim": self.val_mae_per_dim,
            "num_frames": self.num_frames,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationMetrics:
        """The inverse of :meth:`as_dict` (a resumed fold reads its last validation back)."""
        return cls(
            val_l1=data["val_l1"],
            val_l1_normalized=data["val_l1_normalized"],
            val_mae_per_dim=list(data["val_mae_per_dim"]),
            num_frames=data["num_frames"],
        )


def _valid_mask(batch: dict[str, Any], target: torch.Tensor) -> torch.Tensor:
    """(B, T) mask of real (not padded) target actions."""
    pad = batch.get(ACTION_PAD)
    if pad is None:
        return torch.ones(target.shape[:2], dtype=torch.bool)
    return ~pad.to(torch.bool).cpu()


@torch.no_grad()
def validate(policy, preprocessor, postprocessor, loader, camera_keys=(), device="cpu") -> ValidationMetrics:
    """Run the policy over every held-out frame once and return the three error views."""
    from lerobot_kfold.fold_data import camera_frames_to_float

    was_training = policy.training
    policy.eval()
    abs_error_sum: torch.Tensor | None = None
    valid_count: torch.Tensor | None = None
    normalized_loss_sum = 0.0
    num_batches = 0
    num_frames = 0
    try:
        for raw in loader:
            raw = camera_frames_to_float(raw, camera_keys, device)
            target = raw[ACTION].detach().cpu().float()
            if target.ndim == 2:  # policies without action chunks: (B, D) -> (B, 1, D)
                target = target.unsqueeze(1)
            mask = _valid_mask(raw, target)
            batch = preprocessor(dict(raw))

            loss, _ = policy.forward(batch)
            normalized_loss_sum += float(loss.item())
            num_batches += 1

            predicted = policy.predict_action_chunk(batch)
            predicted = postprocessor(predicted).detach().cpu().float()
            if predicted.ndim == 2:
                predicted = predicted.unsqueeze(1)
            horizon = min(predicted.shape[1], target.shape[1])
            error = (predicted[:, :horizon] - target[:, :horizon]).abs()
            valid = mask[:, :horizon].unsqueeze(-1).float()
            batch_sum = (error * valid).sum(dim=(0, 1))
            batch_count = valid.sum(dim=(0, 1)).expand_as(batch_sum)
            abs_error_sum = batch_sum if abs_error_sum is None else abs_error_sum + batch_sum
            valid_count = batch_count if valid_count is None else valid_count + batch_count
            num_frames += target.shape[0]
    finally:
        if was_training:
            policy.train()
    if abs_error_sum is None or valid_count is None:
        raise ValueError("the validation loader produced no batches; the held-out episodes have no frames.")
    per_dim = (abs_error_sum / valid_count.clamp_min(1)).tolist()
    overall = float(abs_error_sum.sum() / valid_count.sum().clamp_min(1))
    return ValidationMetrics(
        val_l1=overall,
        val_l1_normalized=normalized_loss_sum / max(num_batches, 1),
        val_mae_per_dim=[float(v) for v in per_dim],
        num_frames=num_frames,
    )
