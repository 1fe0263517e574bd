"""A fold's output folder: the same fold resumes or is reused; another fold's work is never overwritten.

Regression for the damage case: ``train-fold --output-dir`` pointed at another fold's folder whose
``checkpoints/`` was gone finished with exit 0 after overwriting that fold's result.json and best/ model.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from lerobot_kfold.fold_folder import ForeignFolderError, check_fold_folder
from lerobot_kfold.results import FoldResult
from lerobot_kfold.training import train_fold
from lerobot_kfold.training_config import FoldTrainingConfig

TINY = {"steps": 4, "batch_size": 8, "eval_every": 2, "save_every": 2, "torch_threads": 1}


def _config(root: Path, out: Path, fold_id: int, val: list[int], **kwargs) -> FoldTrainingConfig:
    train = [e for e in range(12) if e not in val]
    return FoldTrainingConfig(
        dataset_root=str(root),
        train_episodes=train,
        val_episodes=val,
        output_dir=str(out),
        fold_id=fold_id,
        **{**TINY, **kwargs},
    )


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_fold(demo_root, tmp_path_factory) -> Path:
    """Fold 0 trained to the end; tests copy its folder."""
    out = tmp_path_factory.mktemp("fold-folder") / "fold_000"
    train_fold(_config(demo_root, out, 0, [0, 1, 2]), progress=lambda m: None)
    return out


class TestAnotherFoldsFolder:
    def test_is_refused_with_nothing_changed_even_without_its_checkpoints(
        self, demo_root, finished_fold, tmp_path
    ):
        folder = tmp_path / "fold_000"
        shutil.copytree(finished_fold, folder)
        shutil.rmtree(folder / "checkpoints")
        before = _hashes(folder)

        with pytest.raises(ForeignFolderError, match=r"holds another fold's work \(result.json of fold 0"):
            train_fold(_config(demo_root, folder, 1, [3, 4, 5]), progress=lambda m: None)
        assert _hashes(folder) == before

    def test_other_settings_of_the_same_fold_are_refused_too(self, demo_root, finished_fold, tmp_path):
        folder = tmp_path / "fold_000"
        shutil.copytree(finished_fold, folder)
        before = _hashes(folder)
        with pytest.raises(ForeignFolderError, match="holds another fold's work"):
            check_fold_folder(_config(demo_root, folder, 0, [0, 1, 2], learning_rate=5e-4))
        assert _hashes(folder) == before


class TestTheSameFold:
    def test_a_finished_fold_is_reused(self, demo_root, finished_fold):
        reused = check_fold_folder(_config(demo_root, finished_fold, 0, [0, 1, 2]))
        assert isinstance(reused, FoldResult) and reused.ok

    def test_an_empty_or_new_folder_trains(self, demo_root, tmp_path):
        assert check_fold_folder(_config(demo_root, tmp_path / "new", 0, [0, 1, 2])) is None

    def test_a_failed_try_of_this_fold_is_retried_but_anothers_is_refused(self, demo_root, tmp_path):
        folder = tmp_path / "fold_000"
        folder.mkdir()
        error = FoldResult.failed(0, 0, 0, "RuntimeError: CUDA out of memory")
        (folder / "error.json").write_text(__import__("json").dumps(error.to_dict()))
        assert check_fold_folder(_config(demo_root, folder, 0, [0, 1, 2])) is None
        with pytest.raises(ForeignFolderError, match=r"error.json of fold 0"):
            check_fold_folder(_config(demo_root, folder, 1, [3, 4, 5]))

    def test_a_file_that_is_no_fold_result_is_named(self, demo_root, tmp_path):
        folder = tmp_path / "fold_000"
        folder.mkdir()
        (folder / "result.json").write_text('{"hello": "world"}')
        with pytest.raises(ValueError, match=r"result\.json"):
            check_fold_folder(_config(demo_root, folder, 0, [0, 1, 2]))
