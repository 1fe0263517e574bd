"""Tests for lerobot_kfold.runner: a whole local k-fold run (plan, train every fold, aggregate).

Every run trains a real tiny ACT on the simulator demo dataset; nothing is mocked. One torch thread per
fold keeps the folds fast on a shared 2-core machine and makes in-process and worker-process folds use
the same kernels.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from lerobot_kfold.aggregate import NotEnoughFoldsError
from lerobot_kfold.dataset_info import DatasetError
from lerobot_kfold.results import CVSummary
from lerobot_kfold.run_settings import RunSettings
from lerobot_kfold.runner import KFoldRunConfig, run_kfold
from lerobot_kfold.splits import read_plan
from lerobot_kfold.storage import fold_folder
from tests.conftest import DEMO_EPISODES

K = 2
# 12 episodes: ceil(0.2 * 12) = 3 held out as a test set, 9 split into 2 folds.
HOLDOUT_FRACTION = 0.2


# Tiny training of the demo ACT (the "small" preset), one torch thread per fold.
TRAINING = {"policy_preset": "small", "steps": 4, "batch_size": 8, "eval_every": 2, "save_every": 2}


def _settings(root: Path, **overrides: Any) -> RunSettings:
    values = {"dataset_root": str(root), "k": K, "holdout_fraction": HOLDOUT_FRACTION, **TRAINING}
    return RunSettings.from_mapping({**values, **overrides})


def _config(root: Path, out: Path, *, parallel: int = 1, stop_at_step: int | None = None) -> KFoldRunConfig:
    return KFoldRunConfig(
        settings=_settings(root),
        output_dir=str(out),
        parallel=parallel,
        torch_threads=1,
        stop_at_step=stop_at_step,
    )


def _fold_results(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads((Path(fold_folder(str(out), fold_id)) / "result.json").read_text()) for fold_id in range(K)
    ]


@pytest.fixture(scope="module")
def finished_run(demo_root, tmp_path_factory) -> tuple[Path, CVSummary, list[str]]:
    """One uninterrupted run, in series: its folder, summary and progress messages."""
    out = tmp_path_factory.mktemp("runner") / "run"
    messages: list[str] = []
    summary = run_kfold(_config(demo_root, out), progress=messages.append)
    return out, summary, messages


class TestFinishedRun:
    def test_every_fold_succeeds(self, finished_run):
        _, summary, _ = finished_run
        assert summary.totals.n_folds == K
        assert summary.totals.n_succeeded == K
        assert summary.failed_folds == []
        assert {r["status"] for r in _fold_results(finished_run[0])} == {"ok"}

    def test_every_usable_episode_is_validated_exactly_once_and_the_holdout_never_used(self, finished_run):
        out, _, _ = finished_run
        plan = read_plan(out / "plan.json")
        holdout = set(plan.holdout_episodes)
        assert len(holdout) == 3
        usable = sorted(set(range(DEMO_EPISODES)) - holdout)

        results = _fold_results(out)
        validated = sorted(e for r in results for e in r["val_episodes"])
        assert validated == usable
        for result in results:
            assert sorted(result["train_episodes"] + result["val_episodes"]) == usable
            assert not holdout & set(result["train_episodes"])

    def test_fold_rows_carry_their_repeat_and_index(self, finished_run):
        _, summary, _ = finished_run
        rows = [(f.fold_id, f.repeat, f.index) for f in summary.folds]
        assert rows == [(0, 0, 0), (1, 0, 1)]

    def test_fold_result_files_carry_their_repeat_and_index(self, finished_run):
        results = _fold_results(finished_run[0])
        assert [(r.get("repeat"), r.get("index")) for r in results] == [(0, 0), (0, 1)]

    def test_summary_metrics_are_the_folds_metrics_aggregated(self, finished_run):
        out, summary, _ = finished_run
        values = [r["metrics"]["val_l1"] for r in _fold_results(out)]
        assert summary.metrics["val_l1"].n == K
        assert summary.metrics["val_l1"].mean == pytest.approx(sum(values) / K, rel=1e-12)
        assert summary.best_fold.value == min(values)

    def test_writes_the_plan_and_the_summary_files(self, finished_run):
        out, summary, messages = finished_run
        for name in ("plan.json", "summary.json", "folds.csv", "report.png", "report.html"):
            assert (out / name).is_file(), name
        assert summary.outputs["summary_json"] == str(out / "summary.json")
        assert summary.plan_hash == read_plan(out / "plan.json").content_hash()
        planned = [m for m in messages if m.startswith("planned ")]
        assert planned and planned[0].startswith(f"planned {K} folds over {DEMO_EPISODES} episodes")
        assert len([m for m in messages if m.startswith("fold ") and " done " in m]) == K


class TestRerun:
    def test_rerunning_reuses_finished_folds_and_gives_the_same_summary(self, demo_root, finished_run):
        out, summary, _ = finished_run
        result_files = [Path(fold_folder(str(out), i)) / "result.json" for i in range(K)]
        mtimes = [f.stat().st_mtime_ns for f in result_files]
        checkpoints = [sorted(p.name for p in (f.parent / "checkpoints").iterdir()) for f in result_files]

        again = run_kfold(_config(demo_root, out), progress=lambda message: None)

        # _existing_result: an "ok" result.json with the same resume key is returned as it is.
        assert [f.stat().st_mtime_ns for f in result_files] == mtimes
        assert [
            sorted(p.name for p in (f.parent / "checkpoints").iterdir()) for f in result_files
        ] == checkpoints
        assert again.metrics == summary.metrics
        assert again.best_fold == summary.best_fold
        assert again.folds == summary.folds


class TestInterruptedRun:
    def test_interrupted_folds_are_never_summarized_and_a_rerun_resumes_them(
        self, demo_root, tmp_path, finished_run
    ):
        out = tmp_path / "run"
        with pytest.raises(NotEnoughFoldsError) as excinfo:
            run_kfold(_config(demo_root, out, stop_at_step=2), progress=lambda message: None)

        assert (excinfo.value.n_succeeded, excinfo.value.n_folds) == (0, K)
        assert [f.fold_id for f in excinfo.value.failed] == list(range(K))
        assert not (out / "summary.json").exists()
        for result in _fold_results(out):
            assert (result["status"], result["steps"]) == ("interrupted", 2)

        summary = run_kfold(_config(demo_root, out), progress=lambda message: None)

        assert summary.totals.n_succeeded == K
        for result in _fold_results(out):
            assert result["status"] == "ok"
            assert result["resumed_from_step"] == 2
            assert (result["steps_this_run"], result["steps"]) == (2, 4)
        # Resume is sample-exact: the same numbers as the run that was never interrupted.
        assert summary.metrics == finished_run[1].metrics


class TestParallelRun:
    def test_folds_in_worker_processes_give_the_same_metrics_as_in_series(
        self, demo_root, tmp_path, finished_run
    ):
        summary = run_kfold(_config(demo_root, tmp_path / "run", parallel=2), progress=lambda message: None)

        assert summary.totals.n_succeeded == K
        assert summary.metrics == finished_run[1].metrics
        assert summary.best_fold == finished_run[1].best_fold
        assert [(f.fold_id, f.repeat, f.index) for f in summary.folds] == [(0, 0, 0), (1, 0, 1)]


class TestBadInput:
    def test_an_unknown_policy_override_fails_before_anything_is_written(self, demo_root, tmp_path):
        config = KFoldRunConfig(
            settings=_settings(demo_root, policy_overrides={"dim_modle": 64}),
            output_dir=str(tmp_path / "run"),
        )
        with pytest.raises(ValueError, match="dim_modle"):
            run_kfold(config, progress=lambda message: None)
        assert list(tmp_path.iterdir()) == []

    def test_an_output_folder_of_another_plan_is_refused_with_nothing_written(
        self, demo_root, tmp_path, finished_run
    ):
        out = tmp_path / "run"
        shutil.copytree(finished_run[0], out)
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        config = KFoldRunConfig(settings=_settings(demo_root, k=3), output_dir=str(out), torch_threads=1)
        with pytest.raises(ValueError, match="holds another run's plan"):
            run_kfold(config, progress=lambda message: None)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    def test_run_config_rejects_fewer_than_one_parallel_fold(self, tmp_path):
        with pytest.raises(ValueError, match="parallel"):
            KFoldRunConfig(settings=_settings(Path("x")), output_dir=str(tmp_path / "run"), parallel=0)

    def test_run_id_defaults_to_the_output_folder_name(self, tmp_path):
        config = KFoldRunConfig(settings=_settings(Path("x")), output_dir=str(tmp_path / "my-run"))
        assert config.run_id == "my-run"

    def test_a_missing_dataset_fails_before_anything_is_written(self, tmp_path):
        out = tmp_path / "run"
        with pytest.raises(DatasetError, match="does not exist"):
            run_kfold(_config(tmp_path / "missing", out), progress=lambda message: None)
        assert list(tmp_path.iterdir()) == []

    def test_a_dataset_act_cannot_train_on_fails_before_anything_is_written(self, demo_root, tmp_path):
        root = tmp_path / "dataset"
        shutil.copytree(demo_root, root)
        info_path = root / "meta" / "info.json"
        info = json.loads(info_path.read_text())
        del info["features"]["observation.environment_state"]
        info_path.write_text(json.dumps(info))
        out = tmp_path / "run"

        with pytest.raises(DatasetError, match=r"observation\.environment_state"):
            run_kfold(_config(root, out), progress=lambda message: None)
        assert not out.exists()


# Times, where the folder is, and what the time cost: they differ between two runs of the same folds.
_RUN_SPECIFIC = {"wall_s", "train_seconds", "steps_per_s", "output_dir", "checkpoints", "cost"}


def _relative_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


class TestOneCandidate:
    def test_a_run_of_one_named_candidate_writes_todays_files_with_todays_numbers(
        self, demo_root, tmp_path, finished_run
    ):
        today, today_summary, _ = finished_run
        out = tmp_path / today.name  # the same folder name: the same run id
        config = KFoldRunConfig(
            settings=_settings(demo_root, candidates={"same": {}}), output_dir=str(out), torch_threads=1
        )

        summary = run_kfold(config, progress=lambda message: None)

        assert _relative_files(out) == _relative_files(today)
        assert (out / "plan.json").read_bytes() == (today / "plan.json").read_bytes()
        for ours, theirs in zip(_fold_results(out), _fold_results(today), strict=True):
            assert {k: v for k, v in ours.items() if k not in _RUN_SPECIFIC} == {
                k: v for k, v in theirs.items() if k not in _RUN_SPECIFIC
            }
        assert summary.metrics == today_summary.metrics
        assert summary.best_fold == today_summary.best_fold
        assert summary.comparison is None and summary.candidate == "same"
        assert [f.metrics for f in summary.folds] == [f.metrics for f in today_summary.folds]
