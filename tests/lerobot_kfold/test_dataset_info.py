"""Tests for lerobot_kfold.dataset_info: reading a LeRobot dataset's metadata without touching the hub.

Every dataset here is the session's simulator demo (12 episodes) or a copy of it with one thing broken;
numbers are checked against a hand computation from the dataset's own data parquet files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lerobot_kfold import dataset_info
from lerobot_kfold.dataset_info import DatasetError
from lerobot_kfold.splits import EpisodeInfo
from tests.conftest import DEMO_EPISODES

DEMO_TASK = "Pick up the block and place it on the goal."


def _copy(demo_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    shutil.copytree(demo_root, root)
    return root


def _edit_info(root: Path, edit: Callable[[dict], None]) -> None:
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    edit(info)
    info_path.write_text(json.dumps(info, indent=4))


def _frames(root: Path) -> pd.DataFrame:
    files = sorted((root / "data").glob("*/*.parquet"))
    assert files, f"no data parquet under {root}"
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _feature_values(frames: pd.DataFrame, feature: str, episodes: list[int]) -> np.ndarray:
    """Frame-level values of a vector feature for the given episodes, as a (frames, dim) float64 array."""
    rows = frames[frames["episode_index"].isin(episodes)][feature]
    return np.stack(rows.to_numpy()).astype(np.float64)


# ----------------------------------------------------------------------------------- broken dataset roots


def _missing(demo_root: Path, tmp_path: Path) -> Path:
    return tmp_path / "nowhere" / "dataset"


def _a_file(demo_root: Path, tmp_path: Path) -> Path:
    path = tmp_path / "dataset.parquet"
    path.write_text("not a folder")
    return path


def _no_info_json(demo_root: Path, tmp_path: Path) -> Path:
    root = _copy(demo_root, tmp_path)
    (root / "meta" / "info.json").unlink()
    return root


def _empty_folder(demo_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "empty"
    root.mkdir()
    return root


def _truncated_info_json(demo_root: Path, tmp_path: Path) -> Path:
    root = _copy(demo_root, tmp_path)
    info_path = root / "meta" / "info.json"
    info_path.write_text(info_path.read_text()[:100])
    return root


def _info_json_not_an_object(demo_root: Path, tmp_path: Path) -> Path:
    root = _copy(demo_root, tmp_path)
    (root / "meta" / "info.json").write_text('["v3.0"]')
    return root


def _old_codebase_version(demo_root: Path, tmp_path: Path) -> Path:
    root = _copy(demo_root, tmp_path)
    _edit_info(root, lambda info: info.update(codebase_version="v2.1"))
    return root


def _no_episodes_parquet(demo_root: Path, tmp_path: Path) -> Path:
    root = _copy(demo_root, tmp_path)
    shutil.rmtree(root / "meta" / "episodes")
    return root


class TestCheckDatasetRoot:
    def test_accepts_the_demo_dataset(self, demo_root):
        assert dataset_info.check_dataset_root(str(demo_root)) == demo_root

    @pytest.mark.parametrize(
        ("make_root", "expected_messages"),
        [
            pytest.param(_missing, ["does not exist", "meta/info.json", "demo-dataset"], id="missing-folder"),
            pytest.param(_a_file, ["is a file", "dataset folder"], id="a-file"),
            pytest.param(_empty_folder, ["not a LeRobot dataset", "meta/info.json"], id="empty-folder"),
            pytest.param(_no_info_json, ["not a LeRobot dataset", "meta/info.json"], id="no-info-json"),
            pytest.param(_truncated_info_json, ["not valid JSON", "corrupted"], id="corrupted-info-json"),
            pytest.param(
                _info_json_not_an_object,
                ["info.json"],
                id="info-json-not-an-object",
            ),
            pytest.param(
                _old_codebase_version,
                ["'v2.1'", "v3.0", "convert_dataset_v21_to_v30"],
                id="old-codebase-version",
            ),
            pytest.param(_no_episodes_parquet, ["meta/episodes/", "finalize()"], id="no-episodes-parquet"),
        ],
    )
    def test_rejects_an_unusable_root_with_a_message_that_says_what_to_fix(
        self, demo_root, tmp_path, make_root, expected_messages
    ):
        root = make_root(demo_root, tmp_path)
        with pytest.raises(DatasetError) as excinfo:
            dataset_info.check_dataset_root(root)
        message = str(excinfo.value)
        assert str(root) in message
        for expected in expected_messages:
            assert expected in message

    def test_dataset_error_is_a_value_error_so_callers_report_it_as_bad_input(self):
        assert issubclass(DatasetError, ValueError)

    @pytest.mark.parametrize(
        "call",
        [
            pytest.param(dataset_info.check_dataset_root, id="check_dataset_root"),
            pytest.param(dataset_info.read_info, id="read_info"),
            pytest.param(dataset_info.episode_infos, id="episode_infos"),
            pytest.param(dataset_info.fingerprint, id="fingerprint"),
            pytest.param(dataset_info.dataset_identity, id="dataset_identity"),
            pytest.param(lambda root: dataset_info.fold_statistics(root, [0]), id="fold_statistics"),
            pytest.param(
                lambda root: dataset_info.check_policy_features(root, "act"), id="check_policy_features"
            ),
        ],
    )
    def test_a_missing_root_is_never_created(self, tmp_path, call):
        # lerobot, given a wrong root, tries the hub and leaves an empty folder behind; we must not.
        root = tmp_path / "typo" / "so101_demo"
        with pytest.raises(DatasetError, match="does not exist"):
            call(root)
        assert list(tmp_path.iterdir()) == []

    def test_expands_a_home_relative_path(self, demo_root, monkeypatch):
        monkeypatch.setenv("HOME", str(demo_root.parent))
        assert dataset_info.check_dataset_root(f"~/{demo_root.name}") == demo_root


# ---------------------------------------------------------------------------------------------- episodes


class TestEpisodeInfos:
    def test_lists_every_episode_with_its_task_and_frame_count(self, demo_root):
        frames = _frames(demo_root)
        lengths = frames.groupby("episode_index").size()
        expected = [
            EpisodeInfo(index=int(i), task=DEMO_TASK, length=int(n)) for i, n in lengths.sort_index().items()
        ]

        infos = dataset_info.episode_infos(demo_root)

        assert len(infos) == DEMO_EPISODES
        assert infos == expected

    def test_frame_counts_add_up_to_the_dataset_total(self, demo_root):
        info = json.loads((demo_root / "meta" / "info.json").read_text())
        assert sum(e.length for e in dataset_info.episode_infos(demo_root)) == info["total_frames"]

    def test_identity_names_the_dataset_and_its_size(self, demo_root):
        identity = dataset_info.dataset_identity(demo_root)
        assert identity.repo_id == f"local/{demo_root.name}"
        assert identity.root == str(demo_root.resolve())
        assert identity.num_episodes == DEMO_EPISODES
        assert identity.fingerprint == dataset_info.fingerprint(demo_root)
        assert dataset_info.dataset_identity(demo_root, repo_id="me/so101").repo_id == "me/so101"


class TestFingerprint:
    def test_is_stable_across_calls_and_locations(self, demo_root, tmp_path):
        first = dataset_info.fingerprint(demo_root)
        assert dataset_info.fingerprint(demo_root) == first
        # A content hash: the same dataset copied elsewhere is the same data.
        assert dataset_info.fingerprint(_copy(demo_root, tmp_path)) == first

    @pytest.mark.parametrize(
        "edit",
        [
            pytest.param(lambda info: info.update(fps=info["fps"] * 2), id="fps"),
            pytest.param(lambda info: info.update(robot_type="so100_sim"), id="robot-type"),
            pytest.param(lambda info: info["features"].pop("observation.environment_state"), id="features"),
        ],
    )
    def test_changes_when_info_json_changes(self, demo_root, tmp_path, edit):
        root = _copy(demo_root, tmp_path)
        _edit_info(root, edit)
        assert dataset_info.fingerprint(root) != dataset_info.fingerprint(demo_root)

    def test_changes_when_an_episode_changes_length(self, demo_root, tmp_path):
        root = _copy(demo_root, tmp_path)
        table_file = next((root / "meta" / "episodes").glob("*/*.parquet"))
        table = pd.read_parquet(table_file)
        table.loc[table["episode_index"] == 3, "length"] += 1
        table.to_parquet(table_file)
        assert dataset_info.fingerprint(root) != dataset_info.fingerprint(demo_root)


# ------------------------------------------------------------------------------------------- statistics

SUBSET = [1, 4, 7, 10]


class TestFoldStatistics:
    @pytest.mark.parametrize(
        "feature",
        [
            pytest.param("action", id="action"),
            pytest.param("observation.state", id="state"),
            # Not observation.environment_state: its goal height is constant, and lerobot's float32
            # per-episode stats (written at recording) give it a std of ~1.4e-5 instead of 0.
        ],
    )
    def test_subset_statistics_equal_a_hand_computation_over_those_episodes_frames(self, demo_root, feature):
        values = _feature_values(_frames(demo_root), feature, SUBSET)

        stats = dataset_info.fold_statistics(demo_root, SUBSET)[feature]

        # Frame-weighted over the subset's frames; std is the population std (ddof=0), as lerobot's
        # compute_episode_stats/aggregate_stats compute it.
        np.testing.assert_allclose(stats["mean"], values.mean(axis=0), rtol=0, atol=1e-6)
        np.testing.assert_allclose(stats["std"], values.std(axis=0, ddof=0), rtol=0, atol=1e-6)
        np.testing.assert_allclose(stats["min"], values.min(axis=0), rtol=0, atol=0)
        np.testing.assert_allclose(stats["max"], values.max(axis=0), rtol=0, atol=0)
        assert int(np.asarray(stats["count"]).item()) == len(values)

    def test_std_is_the_population_std_not_the_sample_std(self, demo_root):
        values = _feature_values(_frames(demo_root), "action", SUBSET)
        std = dataset_info.fold_statistics(demo_root, SUBSET)["action"]["std"]
        # The two differ by ~1e-3 here, far beyond the 1e-6 agreement with ddof=0 above.
        assert np.abs(std - values.std(axis=0, ddof=1)).max() > 1e-4

    def test_excludes_episodes_outside_the_subset(self, demo_root):
        subset_mean = dataset_info.fold_statistics(demo_root, SUBSET)["action"]["mean"]
        all_mean = dataset_info.fold_statistics(demo_root, list(range(DEMO_EPISODES)))["action"]["mean"]
        assert not np.allclose(subset_mean, all_mean, rtol=0, atol=1e-6)

    def test_does_not_depend_on_the_order_of_the_episodes(self, demo_root):
        forward = dataset_info.fold_statistics(demo_root, SUBSET)["action"]
        backward = dataset_info.fold_statistics(demo_root, SUBSET[::-1])["action"]
        for stat in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(forward[stat], backward[stat], rtol=0, atol=1e-12)

    def test_over_all_episodes_matches_the_datasets_own_stats_json(self, demo_root):
        stats_json = json.loads((demo_root / "meta" / "stats.json").read_text())
        stats = dataset_info.fold_statistics(demo_root, list(range(DEMO_EPISODES)))
        for feature in ("action", "observation.state", "observation.environment_state"):
            for stat in ("mean", "std"):
                np.testing.assert_allclose(
                    stats[feature][stat],
                    np.asarray(stats_json[feature][stat], dtype=np.float64),
                    rtol=0,
                    atol=1e-6,
                    err_msg=f"{feature} {stat}",
                )

    @pytest.mark.parametrize(
        ("episodes", "message"),
        [
            pytest.param([], "at least one training episode", id="no-episodes"),
            pytest.param([0, 12, 40], "[12, 40] are not in the dataset", id="unknown-episodes"),
        ],
    )
    def test_rejects_episodes_it_cannot_use(self, demo_root, episodes, message):
        with pytest.raises(DatasetError) as excinfo:
            dataset_info.fold_statistics(demo_root, episodes)
        assert message in str(excinfo.value)


# --------------------------------------------------------------------------------------- policy features


def _drop_features(*names: str) -> Callable[[dict], None]:
    def edit(info: dict) -> None:
        for name in names:
            info["features"].pop(name)

    return edit


class TestCheckPolicyFeatures:
    def test_the_demo_dataset_can_train_act(self, demo_root):
        dataset_info.check_policy_features(demo_root, "act")

    @pytest.mark.parametrize(
        ("dropped", "policy_type", "expected_messages"),
        [
            pytest.param(
                ["observation.environment_state"],
                "act",
                ["ACT needs a camera image or 'observation.environment_state'", "'observation.state'"],
                id="act-without-images-or-environment-state",
            ),
            pytest.param(
                ["observation.state"],
                "act",
                ["ACT needs an 'observation.state' feature"],
                id="act-without-state",
            ),
            pytest.param(["action"], "act", ["no 'action' feature"], id="no-action-act"),
            pytest.param(["action"], "diffusion", ["no 'action' feature"], id="no-action-any-policy"),
        ],
    )
    def test_fails_before_training_when_a_needed_feature_is_missing(
        self, demo_root, tmp_path, dropped, policy_type, expected_messages
    ):
        root = _copy(demo_root, tmp_path)
        _edit_info(root, _drop_features(*dropped))
        with pytest.raises(DatasetError) as excinfo:
            dataset_info.check_policy_features(root, policy_type)
        for expected in expected_messages:
            assert expected in str(excinfo.value)

    def test_an_image_feature_stands_in_for_the_environment_state(self, demo_root, tmp_path):
        root = _copy(demo_root, tmp_path)

        def swap(info: dict) -> None:
            info["features"].pop("observation.environment_state")
            info["features"]["observation.images.front"] = {
                "dtype": "video",
                "shape": [64, 64, 3],
                "names": ["height", "width", "channels"],
            }

        _edit_info(root, swap)
        dataset_info.check_policy_features(root, "act")
