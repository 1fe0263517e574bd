"""The Modal app defines the three jobs with the Volume mounted and a GPU only where it trains."""

from __future__ import annotations

from pathlib import Path

import modal

from lerobot_kfold import modal_app


def test_registers_the_three_jobs() -> None:
    for name in ("prepare_dataset", "train_fold", "aggregate"):
        assert isinstance(getattr(modal_app, name), modal.Function)
        assert getattr(modal_app, name).app is modal_app.app


def test_every_job_mounts_the_volume_and_only_training_asks_for_a_gpu() -> None:
    for fn in (modal_app.prepare_dataset, modal_app.train_fold, modal_app.aggregate):
        assert set(fn._spec_.volumes) == {modal_app.VOLUME_MOUNT}
    assert modal_app.train_fold._spec_.gpus == modal_app.DEFAULT_GPU
    assert modal_app.prepare_dataset._spec_.gpus is None
    assert modal_app.aggregate._spec_.gpus is None


def test_image_installs_the_pinned_stack_without_airflow(tmp_path: Path) -> None:
    pins = modal_app.runtime_requirements()
    assert any(p.startswith("lerobot[") for p in pins)
    assert any(p.startswith("modal==") for p in pins)
    assert not any(p.startswith("apache-airflow") for p in pins)
    assert all("==" in p for p in pins), "the image uses the same exact pins as requirements.txt"
    assert modal_app.runtime_requirements(tmp_path / "absent.txt") == []


def test_the_local_body_is_the_jobs_body(tmp_path: Path, monkeypatch) -> None:
    """`.local()` (the local backend) runs the same code as the container, storage root included."""
    monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(tmp_path))
    import pytest

    with pytest.raises(ValueError, match=r"dataset_root .* or repo_id"):
        modal_app.prepare_dataset.local()


def test_the_image_holds_what_camera_folds_need() -> None:
    """FFmpeg (torchcodec), headless GL (the simulator's cameras), the backbone baked in at build time."""
    from lerobot_kfold import backbone, rendering

    assert "ffmpeg" in modal_app._APT_PACKAGES
    for package in (pkg for packages in rendering.DEBIAN_PACKAGES.values() for pkg in packages):
        assert package in modal_app._APT_PACKAGES, package
    assert backbone.DEFAULT_WEIGHTS in modal_app.BAKE_BACKBONE
    assert not modal_app.TORCH_HOME.startswith(modal_app.VOLUME_MOUNT), "in the image, not on the Volume"
    assert not modal_app.LOCAL_DATASETS.startswith(modal_app.VOLUME_MOUNT), "the container's own disk"
