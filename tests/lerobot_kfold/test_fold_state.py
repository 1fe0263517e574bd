"""Tests for lerobot_kfold.fold_state: the k-fold bookkeeping a resumed fold reads back from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lerobot_kfold.fold_state import FOLD_STATE_FILE, FoldState
from lerobot_kfold.validation import ValidationMetrics

# What FoldTrainingConfig.resume_key() gives: the settings that change what is trained.
KEY = {"steps": 12, "learning_rate": 0.001}


def metrics(val_l1: float) -> ValidationMetrics:
    return ValidationMetrics(
        val_l1=val_l1, val_l1_normalized=val_l1 * 4, val_mae_per_dim=[val_l1, val_l1], num_frames=30
    )


def state_after_training() -> FoldState:
    state = FoldState(resume_key=KEY)
    for loss in (0.5, 0.25):
        state.record_train_loss(loss)
    state.record_validation(2, metrics(0.2))
    state.record_train_loss(0.125)
    state.add_train_seconds(1.5)
    return state


class TestBookkeeping:
    def test_validation_closes_the_loss_window_into_a_learning_curve_point(self):
        state = FoldState(resume_key=KEY)
        for loss in (0.5, 0.25):
            state.record_train_loss(loss)
        point, improved = state.record_validation(2, metrics(0.2))
        assert point == {"step": 2, "train_loss": 0.375, "val_l1": 0.2, "val_l1_normalized": 0.8}
        assert improved
        assert state.learning_curve == [point]
        assert (state.window_loss_sum, state.window_loss_count, state.last_train_loss) == (0.0, 0, 0.25)

    def test_best_validation_is_kept_until_a_lower_one_comes(self):
        state = FoldState(resume_key=KEY)
        improved = [
            state.record_validation(step, metrics(v))[1] for step, v in ((2, 0.3), (4, 0.1), (6, 0.2))
        ]
        assert improved == [True, True, False]
        assert (state.best_val_l1, state.best_step, state.best_val_mae_per_dim) == (0.1, 4, [0.1, 0.1])
        assert state.last_validation == metrics(0.2)

    def test_a_validation_without_training_steps_reports_zero_train_loss(self):
        point, _ = FoldState(resume_key=KEY).record_validation(0, metrics(0.2))
        assert point["train_loss"] == 0.0

    def test_train_seconds_add_up_over_runs(self):
        state = FoldState(resume_key=KEY)
        state.add_train_seconds(1.5)
        state.add_train_seconds(2.0)
        assert state.train_seconds == 3.5


class TestFoldStateJson:
    def test_save_and_load_round_trip_exactly(self, tmp_path: Path):
        state = state_after_training()
        path = state.save(tmp_path)
        assert path == tmp_path / FOLD_STATE_FILE
        assert FoldState.load(tmp_path) == state

    def test_the_file_keeps_the_keys_checkpoints_have_always_had(self, tmp_path: Path):
        state_after_training().save(tmp_path)
        saved = json.loads((tmp_path / FOLD_STATE_FILE).read_text())
        assert list(saved) == [
            "resume_key",
            "learning_curve",
            "best_val_l1",
            "best_step",
            "window_loss_sum",
            "window_loss_count",
            "last_train_loss",
            "train_seconds",
            "best_val_mae_per_dim",
            "last_validation",
        ]
        assert saved["last_validation"] == metrics(0.2).as_dict()

    def test_reads_a_checkpoint_saved_before_any_validation_by_the_dict_based_trainer(self):
        old = {
            "resume_key": KEY,
            "learning_curve": [],
            "best_val_l1": None,
            "best_step": None,
            "window_loss_sum": 0.75,
            "window_loss_count": 2,
            "last_train_loss": 0.25,
            "train_seconds": 0.5,
        }
        state = FoldState.from_dict(old)
        assert state == FoldState(
            resume_key=KEY,
            window_loss_sum=0.75,
            window_loss_count=2,
            last_train_loss=0.25,
            train_seconds=0.5,
        )

    @pytest.mark.parametrize("data", [pytest.param({}, id="no-key"), pytest.param([], id="not-an-object")])
    def test_a_foreign_file_is_refused_with_the_fix(self, data):
        with pytest.raises(ValueError, match=r"not a fold state.*new output folder"):
            FoldState.from_dict(data, source="ckpt/fold_state.json")
