"""Format detection and v2.1 -> v3.0 conversion, against a real v2.1 dataset written by lerobot 0.3.3.

The fixture (tests/fixtures/lerobot_v21_tiny, see tests/fixtures/README.md) is read-only: every test that
converts works on a copy in tmp_path. Its camera image has a bright square whose position follows
``observation.state[0:2]``, so a decoded video frame can be checked against its own row.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lerobot_kfold.dataset_format import (
    V21,
    V30,
    DatasetFormatError,
    check_readable,
    convert_v21_to_v30,
    dataset_version,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot_v21_tiny"
REPO_ID = "lerobot_kfold/v21_tiny"
EPISODE_LENGTHS = (12, 15, 18, 14)
IMAGE_KEY = "observation.images.front"


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def v21_copy(tmp_path: Path) -> Path:
    root = tmp_path / "source" / "v21_tiny"
    shutil.copytree(FIXTURE, root)
    return root


def square_position(image_chw) -> tuple[int, int]:
    """Top-left corner of the bright 8x8 square (its yellow is the only bright red+green area)."""
    img = np.asarray(image_chw, dtype=np.float32)
    score = img[0] + img[1] - img[2]  # yellow square: high red and green, low blue
    ys, xs = np.nonzero(score > 1.2)
    return int(ys.min()), int(xs.min())


class TestDatasetVersion:
    def test_fixture_is_v21(self) -> None:
        assert dataset_version(FIXTURE) == V21
        assert json.loads((FIXTURE / "meta" / "info.json").read_text())["total_frames"] == sum(
            EPISODE_LENGTHS
        )

    def test_v1_layout(self, tmp_path: Path) -> None:
        (tmp_path / "meta_data").mkdir()
        (tmp_path / "meta_data" / "info.json").write_text(json.dumps({"codebase_version": "v1.6", "fps": 10}))
        assert dataset_version(tmp_path) == "v1.6"

    @pytest.mark.parametrize(
        ("setup", "match"),
        [
            pytest.param(lambda p: None, "no meta/info.json", id="empty-folder"),
            pytest.param(
                lambda p: (p / "meta").mkdir() or (p / "meta/info.json").write_text("{"),
                "JSON",
                id="bad-json",
            ),
            pytest.param(
                lambda p: (p / "meta").mkdir() or (p / "meta/info.json").write_text("{}"),
                "codebase_version",
                id="no-version",
            ),
        ],
    )
    def test_not_a_dataset(self, tmp_path: Path, setup, match: str) -> None:
        setup(tmp_path)
        with pytest.raises(DatasetFormatError, match=match):
            dataset_version(tmp_path)

    def test_missing_folder(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetFormatError, match="does not exist"):
            dataset_version(tmp_path / "nope")


class TestCheckReadable:
    def test_v21_says_how_to_convert(self) -> None:
        with pytest.raises(DatasetFormatError, match="convert_v21_to_v30"):
            check_readable(FIXTURE)

    @pytest.mark.parametrize(
        ("version", "advice"),
        [
            pytest.param("v2.0", "convert_dataset_v20_to_v21", id="v2.0"),
            pytest.param("v1.6", "convert_dataset_v1_to_v2", id="v1.6"),
        ],
    )
    def test_older_formats(self, tmp_path: Path, version: str, advice: str) -> None:
        (tmp_path / "meta").mkdir()
        (tmp_path / "meta" / "info.json").write_text(json.dumps({"codebase_version": version}))
        with pytest.raises(DatasetFormatError, match=advice) as err:
            check_readable(tmp_path)
        assert "lerobot==0.3.3" in str(err.value)
        with pytest.raises(DatasetFormatError, match=version):
            convert_v21_to_v30(tmp_path, tmp_path.parent / "out")


class TestConvert:
    def test_converts_and_lerobot_061_loads_frames_and_video(self, v21_copy: Path, tmp_path: Path) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        before = tree_digest(v21_copy)
        target = tmp_path / "converted" / "v21_tiny"
        record = convert_v21_to_v30(v21_copy, target)

        assert tree_digest(v21_copy) == before, "the source must be left untouched"
        assert record.action == "converted"
        assert (record.source_version, record.target_version) == (V21, V30)
        assert (record.total_episodes, record.total_frames) == (len(EPISODE_LENGTHS), sum(EPISODE_LENGTHS))
        assert record.video_keys == [IMAGE_KEY]
        assert record.lerobot_version == "0.6.1"
        assert record.files_not_carried == []
        assert check_readable(target) == V30
        # Only the target appears beside it: the staging folder is gone.
        assert sorted(p.name for p in target.parent.iterdir()) == ["v21_tiny"]

        ds = LeRobotDataset(REPO_ID, root=target, video_backend="pyav")
        assert ds.num_episodes == len(EPISODE_LENGTHS) and len(ds) == sum(EPISODE_LENGTHS)
        assert [int(ds.meta.episodes["length"][i]) for i in range(4)] == list(EPISODE_LENGTHS)
        tasks = set(ds.meta.tasks.index)
        assert tasks == {"Pick up the red block.", "Push the blue block to the goal."}
        # Every frame of episodes 0 and 3 (first and last in the concatenated video file), and a few of
        # the middle ones: the decoded image is the one recorded with that row.
        starts = np.cumsum((0, *EPISODE_LENGTHS))
        indices = [*range(starts[0], starts[1]), *range(starts[3], starts[4]), starts[1] + 7, starts[2] + 17]
        for idx in indices:
            item = ds[int(idx)]
            image = item[IMAGE_KEY]
            assert tuple(image.shape) == (3, 32, 32)
            state = item["observation.state"].numpy()
            expected = (round(float(state[1]) * 24), round(float(state[0]) * 24))
            top, left = square_position(image)
            assert abs(top - expected[0]) <= 1 and abs(left - expected[1]) <= 1, (idx, (top, left), expected)
        # Row data survive unchanged (parquet rows of the source, episode 2 frame 5).
        import pandas as pd

        src = pd.read_parquet(v21_copy / "data" / "chunk-000" / "episode_000002.parquet")
        item = ds[int(starts[2] + 5)]
        np.testing.assert_array_equal(item["action"].numpy(), np.asarray(src["action"][5], dtype=np.float32))
        assert int(item["episode_index"]) == 2 and int(item["frame_index"]) == 5

    def test_target_exists(self, v21_copy: Path, tmp_path: Path) -> None:
        target = tmp_path / "converted"
        target.mkdir()
        with pytest.raises(FileExistsError, match="exist_ok"):
            convert_v21_to_v30(v21_copy, target)

    def test_retry_with_exist_ok_does_nothing(self, v21_copy: Path, tmp_path: Path) -> None:
        target = tmp_path / "converted"
        first = convert_v21_to_v30(v21_copy, target)
        stamp = (target / "meta" / "info.json").stat().st_mtime_ns
        again = convert_v21_to_v30(v21_copy, target, exist_ok=True)
        assert (first.action, again.action) == ("converted", "already_converted")
        assert again.total_frames == first.total_frames
        assert (target / "meta" / "info.json").stat().st_mtime_ns == stamp

    def test_already_v30(self, v21_copy: Path, tmp_path: Path) -> None:
        target = tmp_path / "converted"
        convert_v21_to_v30(v21_copy, target)
        with pytest.raises(DatasetFormatError, match=r"already a v3\.0"):
            convert_v21_to_v30(target, tmp_path / "again")

    def test_failure_leaves_no_target(self, v21_copy: Path, tmp_path: Path) -> None:
        (v21_copy / "meta" / "episodes_stats.jsonl").unlink()  # a broken v2.1 dataset
        target = tmp_path / "out" / "converted"
        with pytest.raises(FileNotFoundError):
            convert_v21_to_v30(v21_copy, target)
        assert not target.exists()
        assert list(target.parent.iterdir()) == [], "the staging folder must be removed"

    def test_extra_files_are_reported(self, v21_copy: Path, tmp_path: Path) -> None:
        (v21_copy / "README.md").write_text("# a dataset card\n")
        record = convert_v21_to_v30(v21_copy, tmp_path / "converted")
        assert record.files_not_carried == ["README.md"]
        assert json.loads(json.dumps(record.to_dict()))["action"] == "converted"

    def test_target_inside_source(self, v21_copy: Path) -> None:
        with pytest.raises(ValueError, match="outside the source"):
            convert_v21_to_v30(v21_copy, v21_copy / "converted")
