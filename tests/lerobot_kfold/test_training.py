"""Fold training: fold-correct normalization, validation metrics, checkpoints and exact resume.

Every test trains a real (tiny) lerobot ACT on the simulator demo dataset; nothing is mocked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from lerobot_kfold.fold_folder import ForeignFolderError
from lerobot_kfold.fold_state import FoldState
from lerobot_kfold.results import FoldResult
from lerobot_kfold.rollout import RolloutMetrics
from lerobot_kfold.training import (
    LoopOutcome,
    Resumed,
    fold_result,
    train_fold,
    wandb_run_id,
)
from lerobot_kfold.training_config import DEMO_ACT_OVERRIDES, FoldTrainingConfig
from lerobot_kfold.validation import ValidationMetrics

TRAIN = list(range(3, 12))
VAL = [0, 1, 2]


def _config(root: Path, out: Path, **kwargs) -> FoldTrainingConfig:
    options = {
        "policy_overrides": dict(DEMO_ACT_OVERRIDES),
        "steps": 12,
        "batch_size": 8,
        "eval_every": 4,
        "save_every": 4,
        "torch_threads": 1,
    }
    options.update(kwargs)
    return FoldTrainingConfig(
        dataset_root=str(root), train_episodes=TRAIN, val_episodes=VAL, output_dir=str(out), **options
    )


def _quiet(message: str) -> None:
    pass


CAMERA_TRAIN = [2, 3, 4, 5, 6, 7]
CAMERA_VAL = [0, 1]


def _camera_config(root: Path, out: Path, **kwargs) -> FoldTrainingConfig:
    """A camera fold of the small ACT (its ResNet-18 from scratch: no weights download in tests)."""
    options = {
        "policy_preset": "small",
        "pretrained_backbone": False,
        "steps": 4,
        "batch_size": 8,
        "eval_every": 4,
        "save_every": 2,
        "torch_threads": 1,
    }
    options.update(kwargs)
    return FoldTrainingConfig(
        dataset_root=str(root),
        train_episodes=CAMERA_TRAIN,
        val_episodes=CAMERA_VAL,
        output_dir=str(out),
        **options,
    )


def _normalizer_state(model_dir: Path) -> dict[str, np.ndarray]:
    """The statistics the saved pre-processor normalizes with (what the model actually sees)."""
    files = sorted(model_dir.glob("*normalizer*.safetensors"))
    assert files, f"no normalizer state in {model_dir}"
    state: dict[str, np.ndarray] = {}
    for path in files:
        state.update({f"{path.name}:{k}": v.numpy() for k, v in load_file(path).items()})
    return state


def _change_held_out_episodes(root: Path, episodes: list[int]) -> None:
    """Rewrite the held-out episodes' actions and states (and every statistic that covers them)."""
    from lerobot.datasets.compute_stats import aggregate_stats, get_feature_stats

    data_file = next((root / "data").glob("*/*.parquet"))
    frames = pd.read_parquet(data_file)
    held_out = frames["episode_index"].isin(episodes)
    for feature in ("action", "observation.state"):
        frames.loc[held_out, feature] = frames.loc[held_out, feature].map(lambda v: v * 5.0 + 3.0)
    frames.to_parquet(data_file)

    episodes_file = next((root / "meta" / "episodes").glob("*/*.parquet"))
    table = pd.read_parquet(episodes_file)
    for feature in ("action", "observation.state"):
        columns = {c: list(table[c]) for c in table.columns if c.startswith(f"stats/{feature}/")}
        for position, index in enumerate(table["episode_index"]):
            if int(index) not in episodes:
                continue
            values = np.stack(frames.loc[frames["episode_index"] == index, feature].to_numpy())
            for name, value in get_feature_stats(values, axis=0, keepdims=False).items():
                column = f"stats/{feature}/{name}"
                if column in columns:
                    columns[column][position] = np.atleast_1d(np.asarray(value))
        for column, values in columns.items():
            table[column] = values
    table.to_parquet(episodes_file)

    # meta/stats.json (what lerobot-train normalizes with) now changes too.
    global_stats = json.loads((root / "meta" / "stats.json").read_text())
    per_episode = []
    for feature in ("action", "observation.state"):
        values = np.stack(frames[feature].to_numpy())
        per_episode.append({feature: get_feature_stats(values, axis=0, keepdims=False)})
    merged = aggregate_stats(per_episode)
    for feature, stats in merged.items():
        global_stats[feature] = {k: np.asarray(v).tolist() for k, v in stats.items()}
    (root / "meta" / "stats.json").write_text(json.dumps(global_stats))


class TestFoldCorrectNormalization:
    def test_held_out_data_does_not_change_the_statistics_the_model_sees(self, demo_root, tmp_path):
        changed = tmp_path / "changed"
        shutil.copytree(demo_root, changed)
        _change_held_out_episodes(changed, VAL)
        # The change is real: lerobot's global stats (what lerobot-train would use) differ.
        original_stats = json.loads((demo_root / "meta" / "stats.json").read_text())
        changed_stats = json.loads((changed / "meta" / "stats.json").read_text())
        assert original_stats["action"]["mean"] != changed_stats["action"]["mean"]

        a = train_fold(_config(demo_root, tmp_path / "a", steps=2, eval_every=2), progress=_quiet)
        b = train_fold(_config(changed, tmp_path / "b", steps=2, eval_every=2), progress=_quiet)

        seen_a = _normalizer_state(Path(a.checkpoints["last"]) / "pretrained_model")
        seen_b = _normalizer_state(Path(b.checkpoints["last"]) / "pretrained_model")
        assert seen_a.keys() == seen_b.keys()
        for key in seen_a:
            np.testing.assert_array_equal(seen_a[key], seen_b[key], err_msg=key)
        # ...and they are not the all-episode statistics either.
        action_means = [v for k, v in seen_a.items() if k.endswith("action.mean")]
        assert action_means
        assert not np.allclose(action_means[0], original_stats["action"]["mean"])
        # The held-out data did change, so validation sees it.
        assert a.metrics["val_l1"] != b.metrics["val_l1"]


@pytest.mark.slow
class TestCameraFold:
    """A fold of a video dataset: its frames cached once, the same guarantees as a state-only fold."""

    def test_held_out_data_does_not_change_the_statistics_the_model_sees(self, camera_demo_root, tmp_path):
        changed = tmp_path / "changed"
        shutil.copytree(camera_demo_root, changed)
        _change_held_out_episodes(changed, CAMERA_VAL)
        a = train_fold(
            _camera_config(camera_demo_root, tmp_path / "a", steps=2, eval_every=2), progress=_quiet
        )
        b = train_fold(_camera_config(changed, tmp_path / "b", steps=2, eval_every=2), progress=_quiet)
        seen_a = _normalizer_state(Path(a.checkpoints["last"]) / "pretrained_model")
        seen_b = _normalizer_state(Path(b.checkpoints["last"]) / "pretrained_model")
        assert seen_a.keys() == seen_b.keys()
        assert any("observation.images.front" in key for key in seen_a), "cameras are normalized too"
        for key in seen_a:
            np.testing.assert_array_equal(seen_a[key], seen_b[key], err_msg=key)
        assert a.metrics["val_l1"] != b.metrics["val_l1"]

    def test_interrupted_then_resumed_run_ends_exactly_like_an_uninterrupted_one(
        self, camera_demo_root, tmp_path
    ):
        messages: list[str] = []
        overrides = {**DEMO_ACT_OVERRIDES, "dropout": 0.1}
        full = train_fold(
            _camera_config(camera_demo_root, tmp_path / "full", policy_overrides=overrides),
            progress=messages.append,
        )
        assert any("items memory" in m for m in messages), "the frames come from the fold's frame cache"
        train_fold(
            _camera_config(
                camera_demo_root, tmp_path / "resumed", policy_overrides=overrides, stop_at_step=2
            ),
            progress=_quiet,
        )
        resumed = train_fold(
            _camera_config(camera_demo_root, tmp_path / "resumed", policy_overrides=overrides),
            progress=_quiet,
        )
        assert (resumed.resumed_from_step, resumed.steps_this_run) == (2, 2)
        assert resumed.metrics == full.metrics
        assert resumed.learning_curve == full.learning_curve
        assert resumed.final_train_loss == full.final_train_loss

    def test_the_frame_cache_trains_like_lerobots_streaming_reads(self, camera_demo_root, tmp_path):
        """Same items, so the same training, bit for bit, as decoding every item from video per step."""
        cached = train_fold(_camera_config(camera_demo_root, tmp_path / "cached", steps=2), progress=_quiet)
        streamed = train_fold(
            _camera_config(camera_demo_root, tmp_path / "streamed", steps=2, preload=False, num_workers=0),
            progress=_quiet,
        )
        assert cached.metrics == streamed.metrics
        assert cached.final_train_loss == streamed.final_train_loss


class TestFoldResultBuilding:
    """How a fold's result is made from its training state (no training needed)."""

    def _state(self) -> FoldState:
        state = FoldState(resume_key={}, train_seconds=2.0, last_train_loss=0.125)
        state.record_validation(4, ValidationMetrics(0.3, 1.2, [0.3, 0.3, 0.3, 0.3], 40))
        state.record_validation(8, ValidationMetrics(0.2, 0.8, [0.1, 0.3, 0.2, 0.2], 40))
        state.record_validation(12, ValidationMetrics(0.25, 1.0, [0.2, 0.3, 0.3, 0.2], 40))
        return state

    def test_metrics_are_the_last_validation_with_the_best_one_beside_it(self, tmp_path):
        config = _config(tmp_path / "data", tmp_path / "fold")
        result = fold_result(
            config, self._state(), LoopOutcome("ok", 12, 6), device="cpu", resumed_from=6, wall_s=3.5
        )
        assert result.metrics == {"val_l1": 0.25, "val_l1_normalized": 1.0, "best_val_l1": 0.2}
        assert (result.best_step, result.best_val_mae_per_dim) == (8, [0.1, 0.3, 0.2, 0.2])
        assert result.val_mae_per_dim == [0.2, 0.3, 0.3, 0.2]
        assert [p["step"] for p in result.learning_curve] == [4, 8, 12]
        assert (result.steps, result.steps_this_run, result.resumed_from_step) == (12, 6, 6)
        assert (result.train_seconds, result.steps_per_s, result.wall_s) == (2.0, 6.0, 3.5)
        assert (result.fold_id, result.train_episodes, result.val_episodes) == (0, TRAIN, VAL)
        assert result.resume_key == config.resume_key()
        assert result.checkpoints == {
            "last": "",
            "best": str(tmp_path / "fold" / "best" / "pretrained_model"),
        }
        assert result.sim is None

    def test_simulator_rollouts_add_their_metrics_and_details(self, tmp_path):
        rollout = RolloutMetrics(0.5, 120.0, 2, [100, 101], [True, False], 1.0)
        result = fold_result(
            _config(tmp_path / "data", tmp_path / "fold"),
            self._state(),
            LoopOutcome("ok", 12, 12),
            device="cpu",
            resumed_from=None,
            wall_s=3.5,
            rollout=rollout,
        )
        assert list(result.metrics) == [
            "val_l1",
            "val_l1_normalized",
            "best_val_l1",
            "sim_success_rate",
            "sim_mean_episode_length",
        ]
        assert (result.metrics["sim_success_rate"], result.sim) == (0.5, rollout.as_dict())

    def test_a_run_stopped_before_its_first_validation_has_no_metrics(self, tmp_path):
        state = FoldState(resume_key={})
        result = fold_result(
            _config(tmp_path / "data", tmp_path / "fold"),
            state,
            LoopOutcome("interrupted", 2, 2),
            device="cpu",
            resumed_from=None,
            wall_s=1.0,
        )
        assert (result.status, result.metrics, result.val_mae_per_dim, result.steps_per_s) == (
            "interrupted",
            {},
            None,
            None,
        )

    def test_resumed_from_is_the_checkpoint_step_only_when_there_was_one(self, tmp_path):
        state = FoldState(resume_key={})
        assert Resumed(state, 0, None).resumed_from is None
        assert Resumed(state, 6, tmp_path / "checkpoints" / "000006").resumed_from == 6


class TestValidation:
    def test_result_reports_validation_in_action_units_with_a_learning_curve(self, demo_root, tmp_path):
        result = train_fold(_config(demo_root, tmp_path / "fold"), progress=_quiet)
        assert result.status == "ok"
        assert result.steps == 12
        assert [p["step"] for p in result.learning_curve] == [4, 8, 12]
        metrics = result.metrics
        assert metrics["val_l1"] > 0 and metrics["val_l1_normalized"] > 0
        assert metrics["best_val_l1"] == min(p["val_l1"] for p in result.learning_curve)
        assert len(result.val_mae_per_dim) == 4
        # The overall L1 is the frame-weighted mean over dimensions (every dimension has the same mask).
        assert metrics["val_l1"] == pytest.approx(np.mean(result.val_mae_per_dim), rel=1e-5)
        assert result.train_episodes == TRAIN and result.val_episodes == VAL
        json.dumps(result.to_dict(), allow_nan=False)
        assert FoldResult.from_json_file(tmp_path / "fold" / "result.json") == result

    def test_best_and_last_checkpoints_load_with_lerobot(self, demo_root, tmp_path):
        from lerobot.policies.act.modeling_act import ACTPolicy

        result = train_fold(_config(demo_root, tmp_path / "fold"), progress=_quiet)
        best = Path(result.checkpoints["best"])
        last = Path(result.checkpoints["last"]) / "pretrained_model"
        for model_dir in (best, last):
            policy = ACTPolicy.from_pretrained(model_dir)
            assert policy.config.chunk_size == 10
        assert (Path(result.checkpoints["last"]) / "training_state" / "optimizer_state.safetensors").is_file()


class TestOnACudaMachine:
    def test_the_tracker_accepts_the_gpu_memory_that_lerobot_records_when_cuda_exists(self, monkeypatch):
        """lerobot's update_policy sets ``gpu_mem_gb`` whenever CUDA is available, on any device.

        Found by the GPU benchmark: every fold failed on a GPU machine. CI has no GPU, so CUDA is faked
        here and the tracker is driven the way update_policy drives it.
        """
        import torch
        from lerobot.utils.logging_utils import MetricsTracker

        from lerobot_kfold.training import train_meters

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        tracker = MetricsTracker(8, 100, 10, train_meters())
        tracker.gpu_mem_gb = 1.5
        assert tracker.gpu_mem_gb.avg == 1.5
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert "gpu_mem_gb" not in train_meters()


class TestWandb:
    AIRFLOW_RUN = "lerobot_kfold_cv/manual__2026-11-26T08:14:49.014294+00:00"

    @pytest.mark.parametrize("run_id", [AIRFLOW_RUN, None, "x" * 300, "a/b:c;d,e#f?g'h"])
    def test_run_ids_are_ones_wandb_accepts(self, run_id):
        from wandb.sdk.wandb_settings import Settings

        wandb_id = wandb_run_id(run_id, 12)
        assert Settings(run_id=wandb_id).run_id == wandb_id  # wandb's own validation
        assert wandb_id.endswith("-fold-12")

    def test_every_fold_of_a_long_run_id_gets_its_own_run_and_retries_find_it_again(self):
        long_run = "mlops_pipeline_" * 20 + "/scheduled__2026-11-26T00:00:00+00:00"
        ids = {wandb_run_id(long_run, fold) for fold in range(12)}
        assert len(ids) == 12
        assert wandb_run_id(long_run, 3) == wandb_run_id(long_run, 3)
        assert wandb_run_id(long_run + "x", 3) != wandb_run_id(long_run, 3)

    def test_a_fold_of_an_airflow_run_logs_to_wandb_offline(self, demo_root, tmp_path):
        config = _config(
            demo_root,
            tmp_path / "fold",
            steps=2,
            eval_every=2,
            save_every=2,
            wandb_mode="offline",
            run_id=self.AIRFLOW_RUN,
        )
        result = train_fold(config)
        assert result.status == "ok"
        assert list((tmp_path / "fold" / "wandb").glob("offline-run-*-fold-0"))


class TestResume:
    def test_interrupted_then_resumed_run_ends_exactly_like_an_uninterrupted_one(self, demo_root, tmp_path):
        # Dropout on, so the RNG state must be restored too, not only weights and data order.
        overrides = {**DEMO_ACT_OVERRIDES, "dropout": 0.1}
        full = train_fold(_config(demo_root, tmp_path / "full", policy_overrides=overrides), progress=_quiet)

        interrupted = train_fold(
            _config(demo_root, tmp_path / "resumed", policy_overrides=overrides, stop_at_step=6),
            progress=_quiet,
        )
        assert interrupted.status == "interrupted" and interrupted.steps == 6
        resumed = train_fold(
            _config(demo_root, tmp_path / "resumed", policy_overrides=overrides), progress=_quiet
        )

        assert resumed.resumed_from_step == 6
        assert resumed.steps_this_run == 6
        assert resumed.metrics == full.metrics
        assert resumed.learning_curve == full.learning_curve
        assert resumed.final_train_loss == full.final_train_loss
        assert resumed.val_mae_per_dim == full.val_mae_per_dim

    def test_finished_fold_is_not_trained_again(self, demo_root, tmp_path):
        first = train_fold(_config(demo_root, tmp_path / "fold", steps=4), progress=_quiet)
        result_file = tmp_path / "fold" / "result.json"
        mtime = result_file.stat().st_mtime_ns
        again = train_fold(_config(demo_root, tmp_path / "fold", steps=4), progress=_quiet)
        assert again == first
        assert result_file.stat().st_mtime_ns == mtime

    def test_refuses_to_resume_a_checkpoint_of_other_settings(self, demo_root, tmp_path):
        train_fold(_config(demo_root, tmp_path / "fold", stop_at_step=4), progress=_quiet)
        with pytest.raises(ForeignFolderError, match="holds another fold's work"):
            train_fold(_config(demo_root, tmp_path / "fold", learning_rate=5e-4), progress=_quiet)


class TestConfigValidation:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            pytest.param({"steps": 0}, "steps", id="zero-steps"),
            pytest.param({"batch_size": -1}, "batch_size", id="negative-batch"),
            pytest.param({"learning_rate": 0.0}, "learning_rate", id="zero-lr"),
            pytest.param({"device": "tpu"}, "device", id="unknown-device"),
            pytest.param({"wandb_mode": "cloud"}, "wandb_mode", id="unknown-wandb-mode"),
            pytest.param({"val_episodes": [3]}, "both", id="overlapping-episodes"),
            pytest.param({"val_episodes": []}, "val_episodes", id="no-held-out"),
            pytest.param({"policy_overrides": {"device": "cuda"}}, "policy_overrides", id="override-device"),
            pytest.param({"steps": 12, "stop_at_step": 99}, "stop_at_step", id="stop-after-end"),
        ],
    )
    def test_rejects_bad_values_before_any_work(self, tmp_path, kwargs, message):
        options = {
            "dataset_root": str(tmp_path / "missing"),
            "train_episodes": TRAIN,
            "val_episodes": VAL,
            "output_dir": str(tmp_path / "out"),
        }
        options.update(kwargs)
        with pytest.raises(ValueError, match=message):
            FoldTrainingConfig(**options)

    def test_unknown_policy_field_fails_before_training(self, demo_root, tmp_path):
        config = _config(demo_root, tmp_path / "fold", policy_overrides={"not_a_field": 1})
        with pytest.raises(ValueError, match="not_a_field"):
            train_fold(config, progress=_quiet)
