"""The k-fold jobs: the bodies of the Modal functions, also run as they are by the local backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lerobot_kfold import jobs
from lerobot_kfold.aggregate import NotEnoughFoldsError
from lerobot_kfold.dataset_info import DatasetError, dataset_identity, episode_infos
from lerobot_kfold.run_settings import RunSettings
from lerobot_kfold.splits import FoldPlan, SplitConfig, plan_folds


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "storage"
    monkeypatch.setenv("LEROBOT_KFOLD_STORAGE", str(root))
    return root


@pytest.fixture
def stored_demo(storage: Path, demo_root: Path) -> str:
    """The demo dataset copied into storage; returns its storage path."""
    shutil.copytree(demo_root, storage / "datasets" / "demo")
    return "datasets/demo"


class TestPrepareDataset:
    def test_describes_a_dataset_in_storage_for_planning(self, stored_demo: str, demo_root: Path) -> None:
        out = jobs.prepare_dataset(dataset_root=stored_demo)
        assert out["dataset_root"] == stored_demo, "the storage path travels, not this machine's path"
        assert out["num_episodes"] == len(out["episodes"]) == len(episode_infos(demo_root))
        assert out["fingerprint"] == dataset_identity(demo_root).fingerprint
        assert {"action", "observation.state"} <= set(out["features"])
        json.dumps(out)  # it goes through XCom and Modal as JSON

    def test_a_hub_dataset_already_in_storage_is_not_fetched_again(
        self, storage: Path, demo_root: Path
    ) -> None:
        shutil.copytree(demo_root, storage / "datasets" / "owner" / "demo")
        out = jobs.prepare_dataset(repo_id="owner/demo")  # HF_HUB_OFFLINE=1: a fetch would fail
        assert out["dataset_root"] == "datasets/owner/demo"
        assert out["repo_id"] == "owner/demo"

    def test_needs_a_root_or_a_repo_id(self, storage: Path) -> None:
        with pytest.raises(ValueError, match="dataset_root"):
            jobs.prepare_dataset()

    def test_a_missing_root_fails_clearly(self, storage: Path) -> None:
        with pytest.raises(DatasetError, match="does not exist"):
            jobs.prepare_dataset(dataset_root="datasets/nowhere")


V21_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot_v21_tiny"


@pytest.fixture
def stored_v21(storage: Path) -> str:
    """The committed LeRobot v2.1 fixture (lerobot 0.3.3, one 32x32 camera) copied into storage."""
    shutil.copytree(V21_FIXTURE, storage / "datasets" / "v21")
    return "datasets/v21"


@pytest.fixture
def stored_cameras(storage: Path, camera_demo_root: Path) -> str:
    shutil.copytree(camera_demo_root, storage / "datasets" / "cameras")
    return "datasets/cameras"


def _edit_info(root: Path, edit) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


class TestDatasetFormats:
    def test_a_v21_dataset_is_converted_once_and_its_folds_train_on_the_copy(self, stored_v21, storage):
        before = sorted(p.relative_to(storage).as_posix() for p in (storage / stored_v21).rglob("*"))
        out = jobs.prepare_dataset(dataset_root=stored_v21)
        assert out["dataset_root"] == "datasets/v21_v3.0" and out["conversion"]["action"] == "converted"
        after = sorted(p.relative_to(storage).as_posix() for p in (storage / stored_v21).rglob("*"))
        assert after == before, "the original is left as it is"
        again = jobs.prepare_dataset(dataset_root=stored_v21)
        assert again["conversion"]["action"] == "already_converted"

        settings = RunSettings.from_mapping(
            {"dataset_root": stored_v21, "k": 2, "pretrained_backbone": False, **TINY_TRAINING}
        )
        planned = jobs.plan_run(settings, jobs.PreparedDataset.from_dict(again), "runs/d/v21", "run")
        assert planned.plan.dataset.converted_from["source_root"] == stored_v21
        assert planned.plan.dataset.converted_from["source_version"] == "v2.1"
        assert {fold.dataset_root for fold in planned.folds} == {"datasets/v21_v3.0"}
        jobs.record_plan("runs/d/v21", planned.plan)
        assert FoldPlan.from_dict(json.loads((storage / "runs/d/v21/plan.json").read_text())) == planned.plan
        result = jobs.train_fold(planned.folds[0].to_dict())
        assert result["status"] == "ok" and result["metrics"]["val_l1"] > 0

    @pytest.mark.parametrize(
        ("version", "message"),
        [
            pytest.param("v2.0", "Bring it to v2.1 first", id="v2.0"),
            pytest.param("v1.6", "convert_dataset_v1_to_v2", id="v1.6"),
            pytest.param("v4.0", "newer than or different", id="newer"),
        ],
    )
    def test_other_formats_fail_before_any_spend_saying_what_to_do(
        self, stored_v21, storage, version, message
    ):
        _edit_info(storage / stored_v21, lambda info: info.update(codebase_version=version))
        with pytest.raises(ValueError, match=message):
            jobs.prepare_dataset(dataset_root=stored_v21)
        assert not (storage / "datasets" / "v21_v3.0").exists()


class TestCameraChecks:
    """A camera problem fails in prepare_dataset (and validate), naming the feature, never in a fold."""

    def test_a_camera_dataset_is_described_with_its_cameras(self, stored_cameras) -> None:
        out = jobs.prepare_dataset(dataset_root=stored_cameras, sim_eval_episodes=2)
        assert {"observation.images.front", "observation.images.wrist"} <= set(out["features"])

    def test_a_camera_that_is_not_rgb(self, stored_cameras, storage) -> None:
        def gray(info):
            info["features"]["observation.images.wrist"]["shape"] = [48, 64, 1]

        _edit_info(storage / stored_cameras, gray)
        with pytest.raises(
            DatasetError, match=r"'observation.images.wrist' has shape \[48, 64, 1\].*3-channel"
        ):
            jobs.prepare_dataset(dataset_root=stored_cameras)

    def test_a_video_that_does_not_decode(self, stored_cameras, storage) -> None:
        video = next((storage / stored_cameras / "videos" / "observation.images.front").rglob("*.mp4"))
        video.write_bytes(video.read_bytes()[:300])  # a cut-off download
        with pytest.raises(DatasetError, match=r"'observation.images.front'.*cannot be decoded"):
            jobs.prepare_dataset(dataset_root=stored_cameras)

    def test_a_missing_video(self, stored_cameras, storage) -> None:
        next((storage / stored_cameras / "videos" / "observation.images.wrist").rglob("*.mp4")).unlink()
        with pytest.raises(DatasetError, match=r"observation.images.wrist.*is missing"):
            jobs.prepare_dataset(dataset_root=stored_cameras)

    def test_rollouts_need_the_cameras_the_simulator_renders(self, stored_cameras, storage) -> None:
        meta_file = storage / stored_cameras / "meta" / "kfold_demo.json"
        meta = json.loads(meta_file.read_text())
        meta["cameras"]["cameras"] = ["front"]  # the simulator would not render the wrist camera
        meta_file.write_text(json.dumps(meta))
        jobs.prepare_dataset(dataset_root=stored_cameras)  # without rollouts nothing needs rendering
        with pytest.raises(
            DatasetError, match=r"'observation.images.wrist'.*simulator renders no such camera"
        ):
            jobs.prepare_dataset(dataset_root=stored_cameras, sim_eval_episodes=1)


TINY_TRAINING = {"policy_preset": "small", "steps": 4, "eval_every": 2, "save_every": 2, "batch_size": 8}


def _settings(stored: str, **overrides) -> RunSettings:
    return RunSettings.from_mapping({"dataset_root": stored, "k": 2, **TINY_TRAINING, **overrides})


def _fold_configs(stored: str, storage: Path, run_folder: str, **overrides) -> tuple[FoldPlan, list[dict]]:
    dataset = jobs.PreparedDataset.from_dict(jobs.prepare_dataset(dataset_root=stored))
    planned = jobs.plan_run(_settings(stored, **overrides), dataset, run_folder, "run", torch_threads=1)
    return planned.plan, [fold.to_dict() for fold in planned.folds]


class TestPlanRun:
    def test_one_config_per_fold_under_the_run_folder_with_the_plans_seed(self, stored_demo, storage):
        plan, configs = _fold_configs(stored_demo, storage, "runs/d/r", seed=7)
        assert [c["output_dir"] for c in configs] == ["runs/d/r/folds/fold_000", "runs/d/r/folds/fold_001"]
        assert {c["seed"] for c in configs} == {7} and plan.config.seed == 7
        assert [c["val_episodes"] for c in configs] == [list(f.val_episodes) for f in plan.folds]
        assert {c["dataset_root"] for c in configs} == {stored_demo}, "storage paths travel"
        assert not (storage / "runs").exists(), "planning writes nothing"


class TestRecordPlan:
    def test_writes_the_plan_once_and_accepts_the_same_plan_again(self, stored_demo, storage):
        plan, _ = _fold_configs(stored_demo, storage, "runs/d/r")
        path = jobs.record_plan("runs/d/r", plan)
        first = path.read_bytes()
        assert jobs.record_plan("runs/d/r", plan) == path and path.read_bytes() == first

    def test_refuses_a_folder_holding_another_plan_and_leaves_it_as_it_was(self, stored_demo, storage):
        plan, _ = _fold_configs(stored_demo, storage, "runs/d/r")
        other, _ = _fold_configs(stored_demo, storage, "runs/d/r", k=3)
        path = jobs.record_plan("runs/d/r", plan)
        before = path.read_bytes()
        with pytest.raises(ValueError, match="holds another run's plan"):
            jobs.record_plan("runs/d/r", other)
        assert path.read_bytes() == before


@pytest.mark.slow
class TestTrainFold:
    def test_trains_under_storage_and_returns_a_compact_result(self, stored_demo: str, storage: Path) -> None:
        _, configs = _fold_configs(stored_demo, storage, "runs/d/r")
        checkpoints: list[int] = []

        result = jobs.train_fold(configs[0], on_checkpoint=checkpoints.append)

        assert result["status"] == "ok"
        assert result["output_dir"] == "runs/d/r/folds/fold_000"
        assert "learning_curve" not in result
        full = json.loads((storage / "runs/d/r/folds/fold_000/result.json").read_text())
        assert full["metrics"] == result["metrics"]
        assert full["learning_curve"], "the full result with its curve stays on storage"
        assert checkpoints == [2, 4, 4], "after each checkpoint and once the result is written"

    def test_on_modal_the_fold_reads_a_copy_of_its_dataset_on_local_disk(
        self, stored_demo: str, storage: Path, tmp_path: Path
    ) -> None:
        _, configs = _fold_configs(stored_demo, storage, "runs/d/r")
        messages: list[str] = []
        result = jobs.train_fold(configs[0], say=messages.append, local_dataset_dir=str(tmp_path / "local"))
        assert result["status"] == "ok"
        (copy,) = (tmp_path / "local").iterdir()
        assert dataset_identity(copy).fingerprint == dataset_identity(storage / stored_demo).fingerprint
        full = json.loads((storage / "runs/d/r/folds/fold_000/result.json").read_text())
        assert full["resume_key"]["dataset_root"] == str(copy), "it trained on the local copy"
        assert any(m.startswith(f"copied {stored_demo} to local disk") for m in messages)
        assert jobs.copy_to_local_disk(stored_demo, tmp_path / "local") == copy, "a complete copy is reused"

    def test_a_failure_leaves_error_json_and_raises(self, stored_demo: str, storage: Path) -> None:
        _, configs = _fold_configs(stored_demo, storage, "runs/d/r")
        broken = {**configs[0], "val_episodes": [999]}  # no such episode

        with pytest.raises(Exception):  # noqa: B017 - whatever lerobot raises must propagate
            jobs.train_fold(broken)

        error = json.loads((storage / "runs/d/r/folds/fold_000/error.json").read_text())
        assert error["status"] == "failed" and error["fold_id"] == 0 and error["error"]


class TestAggregate:
    def _write_result(
        self, storage: Path, run_folder: str, fold_id: int, val_l1: float, plan: FoldPlan | None = None
    ) -> None:
        fold = (plan or self._plan_object(storage)).fold(fold_id)
        folder = storage / jobs.fold_folder(run_folder, fold_id)
        folder.mkdir(parents=True, exist_ok=True)
        result = {
            "fold_id": fold_id,
            "status": "ok",
            "metrics": {"val_l1": val_l1},
            "wall_s": 1.0,
            "train_episodes": list(fold.train_episodes),
            "val_episodes": list(fold.val_episodes),
        }
        (folder / jobs.RESULT_FILE).write_text(json.dumps(result))

    def _plan_object(self, storage: Path, seed: int = 0) -> FoldPlan:
        root = storage / "datasets" / "demo"
        return plan_folds(episode_infos(root), SplitConfig(k=3, seed=seed), dataset_identity(root))

    def _plan(self, stored: str, storage: Path) -> dict:
        return self._plan_object(storage).to_dict()

    def test_a_result_of_another_plan_or_a_corrupted_one_is_a_failed_fold_never_averaged(
        self, stored_demo: str, storage: Path
    ) -> None:
        self._write_result(storage, "runs/d/r", 0, 0.3)
        self._write_result(storage, "runs/d/r", 1, 0.1, plan=self._plan_object(storage, seed=5))
        corrupted = storage / jobs.fold_folder("runs/d/r", 2)
        corrupted.mkdir(parents=True)
        (corrupted / jobs.RESULT_FILE).write_text('{"fold_id": 2, "status": "ok", "metr')

        summary = jobs.aggregate("runs/d/r", self._plan(stored_demo, storage), {"min_successful_folds": 1})

        errors = {f["fold_id"]: f["error"] for f in summary["failed_folds"]}
        assert "the result of another plan" in errors[1]
        assert "unreadable fold result" in errors[2] and "result.json" in errors[2]
        assert summary["metrics"]["val_l1"]["n"] == 1 and summary["metrics"]["val_l1"]["mean"] == 0.3

    def test_summarizes_the_folds_found_in_storage_and_writes_the_files(
        self, stored_demo: str, storage: Path
    ) -> None:
        for fold_id, value in enumerate([0.3, 0.1, 0.2]):
            self._write_result(storage, "runs/d/r", fold_id, value)

        summary = jobs.aggregate("runs/d/r", self._plan(stored_demo, storage), run_id="d/r")

        assert summary["metrics"]["val_l1"]["mean"] == pytest.approx(0.2)
        assert summary["best_fold"]["fold_id"] == 1
        assert "folds" not in summary
        for name in ("plan.json", "summary.json", "folds.csv", "report.png", "report.html"):
            assert (storage / "runs/d/r" / name).is_file()

    def test_a_fold_without_result_counts_as_failed_never_silently_dropped(
        self, stored_demo: str, storage: Path
    ) -> None:
        self._write_result(storage, "runs/d/r", 0, 0.3)
        folder = storage / jobs.fold_folder("runs/d/r", 2)
        folder.mkdir(parents=True)
        (folder / jobs.ERROR_FILE).write_text(json.dumps({"fold_id": 2, "status": "failed", "error": "OOM"}))
        plan = self._plan(stored_demo, storage)

        with pytest.raises(NotEnoughFoldsError):
            jobs.aggregate("runs/d/r", plan)
        summary = jobs.aggregate("runs/d/r", plan, {"min_successful_folds": 1})

        assert summary["totals"] == {**summary["totals"], "n_folds": 3, "n_succeeded": 1, "n_failed": 2}
        errors = {f["fold_id"]: f["error"] for f in summary["failed_folds"]}
        assert errors[2] == "OOM"
        assert 1 in errors

    def test_folds_the_orchestrator_did_not_see_succeed_count_as_failed(
        self, stored_demo: str, storage: Path
    ) -> None:
        """A fold a user stopped may still have written its result: Airflow's view decides."""
        for fold_id, value in enumerate([0.3, 0.1, 0.2]):
            self._write_result(storage, "runs/d/r", fold_id, value)
        received = [{"fold_id": 0, "status": "ok"}, {"fold_id": 2, "status": "ok"}]

        summary = jobs.aggregate(
            "runs/d/r", self._plan(stored_demo, storage), {"min_successful_folds": 2}, fold_results=received
        )

        assert summary["totals"]["n_succeeded"] == 2
        assert [f["fold_id"] for f in summary["failed_folds"]] == [1]
        assert "did not succeed in the orchestrator" in summary["failed_folds"][0]["error"]
        assert summary["metrics"]["val_l1"]["mean"] == pytest.approx(0.25)
