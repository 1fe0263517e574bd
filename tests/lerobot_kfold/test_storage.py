"""Storage paths: one root per machine, run folders namespaced by DAG and run id."""

from __future__ import annotations

from pathlib import Path

import pytest

from lerobot_kfold import storage


class TestStorageRoot:
    def test_comes_from_the_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(storage.STORAGE_ENV, str(tmp_path))
        assert storage.storage_root() == tmp_path

    def test_defaults_to_a_folder_in_home(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(storage.STORAGE_ENV, raising=False)
        assert storage.storage_root() == Path.home() / "lerobot-kfold"

    def test_relative_paths_resolve_under_it_and_absolute_ones_stay(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(storage.STORAGE_ENV, str(tmp_path))
        assert storage.resolve("datasets/demo") == tmp_path / "datasets" / "demo"
        assert storage.resolve("/data/x") == Path("/data/x")


class TestNames:
    def test_plain_ids_are_kept(self) -> None:
        assert storage.safe_name("scheduled__2026-11-26") == "scheduled__2026-11-26"

    def test_airflow_run_ids_become_folder_names_that_do_not_collide(self) -> None:
        a = storage.safe_name("manual__2026-11-26T05:13:41+00:00")
        b = storage.safe_name("manual__2026-11-26T05_13_41_00_00")
        assert "/" not in a and ":" not in a and "+" not in a
        assert a != b

    @pytest.mark.parametrize("bad", ["", ".", ".."])
    def test_empty_or_dot_names_are_refused(self, bad: str) -> None:
        with pytest.raises(ValueError, match="folder name"):
            storage.safe_name(bad)

    def test_run_folder_is_namespaced_by_dag_and_run(self) -> None:
        assert storage.run_folder("dag", "run_1") == "runs/dag/run_1"

    def test_dataset_folder_keeps_owner_and_name(self) -> None:
        assert storage.dataset_folder("lerobot/pusht") == "datasets/lerobot/pusht"
        with pytest.raises(ValueError, match="owner/name"):
            storage.dataset_folder("pusht")
