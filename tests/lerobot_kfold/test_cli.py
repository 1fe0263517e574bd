"""Tests for the command line, run as a user runs it: ``python -m lerobot_kfold ...`` in a subprocess.

The end-to-end runs train a real tiny ACT on the simulator demo dataset (offline, one torch thread).
Commands that do not depend on each other run two at a time (the machine has 2 cores), each once in a
fixture; the tests then read their exit status, output and files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lerobot_kfold import dataset_info
from lerobot_kfold.splits import FoldPlan, read_plan
from tests.conftest import DEMO_EPISODES

# Tiny training shared by the end-to-end runs (the small demo ACT, chosen explicitly: the default is
# lerobot's ACT), one torch thread per process so that two runs at a time stay fast on a 2-core machine.
SMALL = ["--policy-preset", "small"]
TRAINING = [*SMALL, "--steps", "6", "--batch-size", "8", "--eval-every", "3", "--save-every", "3"]
TRAINING += ["--torch-threads", "1"]
SHORTEST_TRAINING = [*SMALL, "--steps", "2", "--batch-size", "8", "--eval-every", "2", "--save-every", "2"]
SIM_EVAL = ["--sim-eval-episodes", "1", "--sim-eval-max-steps", "10"]
SUMMARY_FILES = ("summary.json", "folds.csv", "report.png", "report.html")
# "same" trains exactly what the demo run trains; "slow" a lower learning rate.
CANDIDATES = {"same": {}, "slow": {"learning_rate": 0.0001}}

Proc = subprocess.CompletedProcess[str]


def cli(*args: Any, cwd: Path | None = None) -> Proc:
    """``python -m lerobot_kfold ARGS`` in a fresh process, offline (bytes pass as they are)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lerobot_kfold", *(a if isinstance(a, bytes) else str(a) for a in args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def cli_all(commands: Mapping[str, Sequence[Any]], cwd: Mapping[str, Path] | None = None) -> dict[str, Proc]:
    """Run independent commands two at a time; their outcomes by name."""
    cwd = cwd or {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(cli, *args, cwd=cwd.get(name)) for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def _describe(proc: Proc) -> str:
    stdout, stderr = proc.stdout[-3000:], proc.stderr[-3000:]
    return f"exit {proc.returncode}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"


def _results(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "folds").glob("fold_*/result.json"))]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------------- help

HELP_CASES = [
    pytest.param([], ["demo-dataset", "plan", "train-fold", "aggregate", "run", "compare"], id="top-level"),
    pytest.param(["demo-dataset"], ["--root", "--episodes", "--cameras", "--image-size"], id="demo-dataset"),
    pytest.param(["plan"], ["--root", "--output", "--k", "--holdout-fraction"], id="plan"),
    pytest.param(["train-fold"], ["--plan", "--fold-id", "--steps", "--policy-overrides"], id="train-fold"),
    pytest.param(["aggregate"], ["--output-dir", "--expected-folds", "--selection-metric"], id="aggregate"),
    pytest.param(["run"], ["--root", "--output-dir", "--record-demo", "--parallel", "--json"], id="run"),
    pytest.param(
        ["run"],
        ["--candidates", "--candidate-grid", "--baseline", "--tie-break", "--refit"],
        id="run-selection",
    ),
    pytest.param(
        ["compare"], ["--output-dir", "--baseline", "--tie-break", "--selection-metric"], id="compare"
    ),
]


@pytest.fixture(scope="module")
def help_runs() -> dict[str, Proc]:
    return cli_all({case.id: [*case.values[0], "--help"] for case in HELP_CASES})


class TestHelp:
    @pytest.mark.parametrize(("command", "options"), HELP_CASES)
    def test_help_exits_0_and_lists_the_options(self, help_runs, request, command, options):
        proc = help_runs[request.node.callspec.id]
        assert proc.returncode == 0, _describe(proc)
        assert proc.stdout.startswith("usage: python -m lerobot_kfold")
        for option in options:
            assert option in proc.stdout


# ---------------------------------------------------------------------------------------------------- plan


class TestPlan:
    def test_prints_a_manifest_that_parses_and_writes_the_same_one(self, demo_root, tmp_path):
        manifest = tmp_path / "plan.json"

        proc = cli("plan", "--root", demo_root, "--k", "3", "--output", manifest)

        assert proc.returncode == 0, _describe(proc)
        plan = FoldPlan.from_json(proc.stdout)
        assert plan.num_folds == 3
        assert plan.dataset.num_episodes == DEMO_EPISODES
        assert plan.dataset.fingerprint == dataset_info.fingerprint(demo_root)
        assert sorted(e for fold in plan.folds for e in fold.val_episodes) == list(range(DEMO_EPISODES))
        assert read_plan(manifest) == plan
        assert f"wrote {manifest} (3 folds" in proc.stderr


# ----------------------------------------------------------------------------------------------- bad input

Args = Callable[[Path, Path], list[Any]]  # (dataset root, empty folder of the case) -> arguments


@dataclass(frozen=True)
class BadInput:
    id: str
    args: Args
    # Text the error line must contain.
    names: str


def _plan(*extra: str) -> Args:
    return lambda root, tmp: ["plan", "--root", root, *extra]


def _run(*extra: str) -> Args:
    return lambda root, tmp: ["run", "--root", root, "--output-dir", tmp / "run", *extra]


BAD_INPUTS = [
    BadInput("k-1", _plan("--k", "1"), "k must be at least 2"),
    BadInput("k-above-episodes", _plan("--k", "20"), "k=20 is greater than the number of episodes (12)"),
    BadInput(
        "missing-root-plan", lambda root, tmp: ["plan", "--root", tmp / "no" / "dataset"], "does not exist"
    ),
    BadInput(
        "missing-root-run",
        lambda root, tmp: ["run", "--root", tmp / "no" / "dataset", "--output-dir", tmp / "run"],
        "does not exist",
    ),
    BadInput(
        "holdout-fraction-0.7", _plan("--holdout-fraction", "0.7"), "holdout_fraction must be less than 0.5"
    ),
    BadInput(
        "repeats-without-shuffle", _plan("--repeats", "2", "--no-shuffle"), "repeats=2 needs shuffle=True"
    ),
    BadInput("zero-steps", _run("--steps", "0"), "steps must be at least 1"),
    BadInput(
        "overrides-not-json", _run("--policy-overrides", "{dim_model: 64"), "policy_overrides must be a JSON"
    ),
    BadInput("overrides-not-an-object", _run("--policy-overrides", "[64]"), "must be a JSON object"),
    BadInput("parallel-0", _run("--parallel", "0"), "argument --parallel: must be a positive integer"),
    BadInput(
        "unknown-camera",
        lambda root, tmp: ["demo-dataset", "--root", tmp / "new", "--cameras", "front,side"],
        "cameras must be one or more distinct names of ['front', 'wrist']",
    ),
    BadInput(
        "aggregate-nothing",
        lambda root, tmp: ["aggregate", tmp, "--output-dir", tmp / "summary"],
        "no result.json files found",
    ),
    # Numbers no run can use.
    BadInput("learning-rate-inf", _run("--learning-rate", "inf"), "learning_rate must be a finite number"),
    BadInput("seed-2^32", _run("--seed", str(2**32)), "seed must be at most 4294967295"),
    BadInput("min-folds-above-folds", _run("--min-successful-folds", "9"), "exceeds the 5 folds"),
    BadInput("success-without-rollouts", _run("--selection-metric", "sim_success_rate"), "needs rollouts"),
    # Policy overrides lerobot would refuse in torch's words, mid-fold.
    BadInput(
        "override-of-the-wrong-type",
        _run("--policy-overrides", '{"dim_model": "big"}'),
        "policy_overrides['dim_model'] must be an integer",
    ),
    BadInput(
        "override-out-of-range", _run("--policy-overrides", '{"dim_model": -8}'), "lerobot cannot build"
    ),
    # Values the data cannot support.
    BadInput("chunk-longer-than-episodes", _run("--chunk-size", "900"), "is longer than every episode"),
    BadInput("batch-larger-than-a-fold", _run("--batch-size", "4000"), "is larger than fold"),
    BadInput(
        "rollouts-on-data-not-from-the-simulator",
        lambda root, tmp: _run("--sim-eval-episodes", "1")(_altered(root, tmp, _not_from_simulator), tmp),
        "needs a dataset recorded from the simulator",
    ),
    # Datasets that are incomplete or not the plan's.
    BadInput(
        "data-file-missing",
        lambda root, tmp: _run()(_altered(root, tmp, lambda d: _data_file(d).unlink()), tmp),
        "is missing: the dataset",
    ),
    BadInput(
        "data-file-truncated",
        lambda root, tmp: _run()(_altered(root, tmp, _truncate_data_file), tmp),
        "is not a readable parquet file",
    ),
    BadInput(
        "plan-of-another-dataset",
        lambda root, tmp: _train_on_other_dataset(root, tmp),
        "not the one the plan",
    ),
    # Paths the operating system cannot take.
    BadInput(
        "file-name-over-255-bytes",
        lambda root, tmp: ["run", "--root", root, "--output-dir", tmp / ("a" * 300)],
        "over the 255 that file systems take",
    ),
    BadInput("undecodable-bytes", lambda root, tmp: ["plan", "--root", b"/tmp/\xff\xfe"], "not valid UTF-8"),
    # Result files that are not one run's.
    BadInput(
        "aggregate-a-corrupted-result",
        lambda root, tmp: _aggregate_files(tmp, {"result.json": '{"fold_id": 0, "stat'}),
        "not valid JSON",
    ),
    BadInput(
        "aggregate-two-runs",
        lambda root, tmp: _aggregate_files(tmp, _results_of_two_runs()),
        "are results of different runs (they differ in steps)",
    ),
]


def _altered(root: Path, tmp: Path, change: Callable[[Path], Any]) -> Path:
    """A copy of the demo dataset in the case's folder, changed."""
    copy = tmp / "dataset"
    shutil.copytree(root, copy)
    change(copy)
    return copy


def _data_file(dataset: Path) -> Path:
    return next((dataset / "data").rglob("*.parquet"))


def _truncate_data_file(dataset: Path) -> None:
    path = _data_file(dataset)
    path.write_bytes(path.read_bytes()[:200])


def _not_from_simulator(dataset: Path) -> None:
    (dataset / "meta" / "kfold_demo.json").unlink()


def _train_on_other_dataset(root: Path, tmp: Path) -> list[Any]:
    """A plan of the demo dataset, applied to a copy whose metadata differs."""
    from lerobot_kfold.splits import SplitConfig, plan_folds, write_plan

    plan = plan_folds(dataset_info.episode_infos(root), SplitConfig(k=2), dataset_info.dataset_identity(root))
    write_plan(plan, tmp / "plan.json")

    def retag(dataset: Path) -> None:
        info_path = dataset / "meta" / "info.json"
        info_path.write_text(info_path.read_text().replace('"so101_sim"', '"so101_real"'))

    other = _altered(root, tmp, retag)
    return [
        "train-fold",
        "--plan",
        tmp / "plan.json",
        "--fold-id",
        "0",
        "--root",
        other,
        "--output-dir",
        tmp / "run",
    ]


def _aggregate_files(tmp: Path, files: dict[str, str]) -> list[Any]:
    for i, (name, text) in enumerate(files.items()):
        folder = tmp / "results" / f"fold_{i:03d}"
        folder.mkdir(parents=True)
        (folder / name.split("/")[-1]).write_text(text)
    return ["aggregate", tmp / "results", "--output-dir", tmp / "run"]


def _results_of_two_runs() -> dict[str, str]:
    from lerobot_kfold.results import FoldResult

    def result(fold_id: int, steps: int) -> str:
        key = {"fold_id": fold_id, "steps": steps, "learning_rate": 1e-3, "val_episodes": [fold_id]}
        return json.dumps(
            FoldResult(fold_id=fold_id, status="ok", metrics={"val_l1": 0.1}, resume_key=key).to_dict()
        )

    return {"a/result.json": result(0, 2000), "b/result.json": result(1, 500)}


@pytest.fixture(scope="module")
def bad_input_runs(demo_root, tmp_path_factory) -> dict[str, tuple[Path, Proc]]:
    """Each bad command, run once in its own empty folder: (that folder, outcome) by case id."""
    folders = {case.id: tmp_path_factory.mktemp(f"bad-{case.id}") for case in BAD_INPUTS}
    procs = cli_all({case.id: case.args(demo_root, folders[case.id]) for case in BAD_INPUTS}, cwd=folders)
    return {case_id: (folders[case_id], proc) for case_id, proc in procs.items()}


class TestBadInput:
    @pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in BAD_INPUTS])
    def test_exits_2_with_one_error_line_naming_the_problem_and_no_traceback(self, bad_input_runs, case):
        _, proc = bad_input_runs[case.id]
        assert proc.returncode == 2, _describe(proc)
        assert "Traceback" not in proc.stderr
        error_lines = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert len(error_lines) == 1, _describe(proc)
        assert case.names in error_lines[0]
        assert proc.stdout == ""

    @pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in BAD_INPUTS])
    def test_the_error_line_is_the_last_thing_said(self, bad_input_runs, case):
        """Progress lines may come first (the dataset checked); nothing after the refusal."""
        _, proc = bad_input_runs[case.id]
        assert proc.stderr.splitlines()[-1].startswith("error: "), _describe(proc)

    @pytest.mark.parametrize("case_id", ["missing-root-plan", "missing-root-run", "zero-steps"])
    def test_leaves_no_dataset_or_run_folder_behind(self, bad_input_runs, case_id):
        folder, _ = bad_input_runs[case_id]
        assert list(folder.iterdir()) == []

    @pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in BAD_INPUTS])
    def test_writes_no_output_folder(self, bad_input_runs, case):
        folder, _ = bad_input_runs[case.id]
        assert not (folder / "run").exists()


# ------------------------------------------------------------------------------------------ run end to end


@dataclass(frozen=True)
class Run:
    out: Path
    proc: Proc
    root: Path


@pytest.fixture(scope="module")
def runs(demo_root, tmp_path_factory) -> dict[str, Run]:
    """Two whole runs, side by side.

    "demo": 2 folds on the demo dataset with a 1-episode simulator evaluation per fold (table output).
    "recorded": ``--record-demo 3`` into a new folder, then 2 folds of 2 steps (``--json`` output).
    "candidates": the demo run's settings as candidate "same", and "slow" with another learning rate, on
    the same 2 folds; the chosen one refit on every episode (no hold-out).
    """
    tmp = tmp_path_factory.mktemp("cli-runs")
    demo_out, recorded_root, recorded_out = tmp / "demo-run", tmp / "so101_demo", tmp / "recorded-run"
    demo_args = ["run", "--root", demo_root, "--output-dir", demo_out, "--k", "2", *TRAINING, *SIM_EVAL]
    recorded_args = ["run", "--record-demo", "3", "--root", recorded_root, "--output-dir", recorded_out]
    recorded_args += ["--k", "2", *SHORTEST_TRAINING, "--torch-threads", "1", "--json"]
    candidates_out = tmp / "candidates-run"
    candidates_args = [*demo_args[:3], "--output-dir", candidates_out, *demo_args[5:], "--parallel", "1"]
    candidates_args += ["--candidates", json.dumps(CANDIDATES), "--refit"]
    procs = cli_all({"demo": demo_args, "recorded": recorded_args, "candidates": candidates_args})
    return {
        "demo": Run(demo_out, procs["demo"], demo_root),
        "recorded": Run(recorded_out, procs["recorded"], recorded_root),
        "candidates": Run(candidates_out, procs["candidates"], demo_root),
    }


@pytest.fixture(scope="module")
def demo_run(runs) -> Run:
    assert runs["demo"].proc.returncode == 0, _describe(runs["demo"].proc)
    return runs["demo"]


class TestRun:
    def test_exits_0_and_prints_the_per_fold_table_and_the_report_path(self, runs):
        run = runs["demo"]
        assert run.proc.returncode == 0, _describe(run.proc)
        assert "Traceback" not in run.proc.stderr
        lines = run.proc.stdout.splitlines()
        header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["fold", "status"])
        assert "val L1" in lines[header] and "success" in lines[header]
        rows = [line.split() for line in lines[header + 2 : header + 4]]
        assert [row[:2] for row in rows] == [["0", "ok"], ["1", "ok"]]
        assert f"report: {run.out / 'report.html'}" in lines

    def test_writes_the_plan_the_summary_files_and_every_fold_result(self, demo_run):
        for name in ("plan.json", *SUMMARY_FILES, "folds/fold_000/result.json", "folds/fold_001/result.json"):
            assert (demo_run.out / name).is_file(), name
        assert read_plan(demo_run.out / "plan.json").num_folds == 2

    def test_summary_val_l1_is_the_mean_and_sample_std_of_the_fold_results(self, demo_run):
        summary = _read_json(demo_run.out / "summary.json")
        values = [r["metrics"]["val_l1"] for r in _results(demo_run.out)]

        assert len(values) == 2
        assert summary["totals"]["n_succeeded"] == 2
        assert summary["metrics"]["val_l1"]["n"] == 2
        assert summary["metrics"]["val_l1"]["mean"] == pytest.approx((values[0] + values[1]) / 2, rel=1e-12)
        assert summary["metrics"]["val_l1"]["std"] == pytest.approx(float(np.std(values, ddof=1)), rel=1e-9)

    def test_each_fold_was_evaluated_in_the_simulator(self, demo_run):
        summary = _read_json(demo_run.out / "summary.json")
        for result in _results(demo_run.out):
            assert result["sim"]["sim_episodes"] == 1
            assert 0.0 <= result["metrics"]["sim_success_rate"] <= 1.0
        assert summary["metrics"]["sim_success_rate"]["n"] == 2


class TestRecordDemo:
    def test_records_the_dataset_first_then_runs_the_folds_on_it(self, runs):
        run = runs["recorded"]
        assert run.proc.returncode == 0, _describe(run.proc)
        assert "recording a demo dataset of 3 episodes" in run.proc.stderr
        assert len(dataset_info.episode_infos(run.root)) == 3
        plan = read_plan(run.out / "plan.json")
        assert plan.dataset.fingerprint == dataset_info.fingerprint(run.root)
        assert sorted(len(fold.val_episodes) for fold in plan.folds) == [1, 2]
        assert _read_json(run.out / "summary.json")["totals"]["n_succeeded"] == 2

    def test_json_output_is_only_the_summary(self, runs):
        run = runs["recorded"]
        printed = json.loads(run.proc.stdout)
        assert printed["metrics"] == _read_json(run.out / "summary.json")["metrics"]
        assert printed["outputs"]["summary_json"] == str(run.out / "summary.json")


@pytest.fixture(scope="module")
def camera_run(camera_demo_root, tmp_path_factory) -> Run:
    """A 2-fold cross-validation of the camera demo (2 folds at once), rollouts rendering its cameras."""
    out = tmp_path_factory.mktemp("cli-camera") / "run"
    args = ["run", "--root", camera_demo_root, "--output-dir", out, "--k", "2", "--parallel", "2"]
    args += [*SHORTEST_TRAINING, "--no-pretrained-backbone", "--torch-threads", "1", "--json"]
    args += ["--sim-eval-episodes", "1", "--sim-eval-max-steps", "5"]
    return Run(out, cli(*args), camera_demo_root)


class TestCameraRun:
    def test_every_fold_trains_on_its_cached_frames_and_rolls_out_with_the_same_cameras(self, camera_run):
        proc = camera_run.proc
        assert proc.returncode == 0, _describe(proc)
        summary = json.loads(proc.stdout)
        assert summary["totals"]["n_succeeded"] == 2
        assert summary["metrics"]["sim_success_rate"]["n"] == 2
        assert proc.stderr.count("items memory") == 2, "each fold decodes its frames once, into memory"
        for result in _results(camera_run.out):
            assert result["metrics"]["val_l1"] > 0 and result["sim"]["sim_episodes"] == 1
            config = _read_json(Path(result["checkpoints"]["best"]) / "config.json")
            assert sorted(config["input_features"]) == [
                "observation.environment_state",
                "observation.images.front",
                "observation.images.wrist",
                "observation.state",
            ]
            assert config["pretrained_backbone_weights"] is None


# ----------------------------------------------------------------------------- train-fold and aggregate


@pytest.fixture(scope="module")
def follow_ups(demo_run, tmp_path_factory) -> dict[str, tuple[Path, Proc]]:
    """Commands run on the demo run's plan and fold folders (never modifying them): (folder, outcome).

    "train-fold": fold 0 of the run's plan, same training options, into a new folder.
    "train-fold-in-run": fold 0 of the run's plan into its default folder, in a copy of the run.
    "aggregate": the run's fold folders into a new folder; "aggregate-3": the same, expecting 3 folds.
    """
    tmp = tmp_path_factory.mktemp("cli-follow-ups")
    copy = tmp / "run-copy"
    shutil.copytree(demo_run.out, copy)
    folders = {
        "train-fold": tmp / "fold_000",
        "train-fold-in-run": copy / "folds" / "fold_000",
        "aggregate": tmp / "summary",
        "aggregate-3": tmp / "summary-3",
    }
    plan, folds = demo_run.out / "plan.json", demo_run.out / "folds"
    procs = cli_all(
        {
            # The same training options as the run.
            "train-fold": [
                *("train-fold", "--plan", plan, "--fold-id", "0", "--output-dir", folders["train-fold"]),
                *TRAINING,
            ],
            "train-fold-in-run": ["train-fold", "--plan", copy / "plan.json", "--fold-id", "0", *TRAINING],
            "aggregate": ["aggregate", folds, "--output-dir", folders["aggregate"], "--expected-folds", "2"],
            "aggregate-3": [
                "aggregate",
                folds,
                "--output-dir",
                folders["aggregate-3"],
                "--expected-folds",
                "3",
            ],
        }
    )
    return {name: (folders[name], proc) for name, proc in procs.items()}


class TestTrainFold:
    def test_train_fold_from_the_written_plan_reproduces_the_runs_fold(self, demo_run, follow_ups):
        fold_dir, proc = follow_ups["train-fold"]
        assert proc.returncode == 0, _describe(proc)
        result = json.loads(proc.stdout)
        from_run = _read_json(demo_run.out / "folds" / "fold_000" / "result.json")
        assert (result["status"], result["repeat"], result["index"]) == ("ok", 0, 0)
        assert result["val_episodes"] == from_run["val_episodes"]
        assert result["metrics"]["val_l1"] == from_run["metrics"]["val_l1"]
        assert result["learning_curve"] == from_run["learning_curve"]
        assert _read_json(fold_dir / "result.json")["metrics"] == result["metrics"]

    def test_train_fold_on_a_runs_own_plan_reuses_its_finished_fold(self, demo_run, follow_ups):
        _, proc = follow_ups["train-fold-in-run"]
        assert proc.returncode == 0, _describe(proc)
        assert "already finished" in proc.stderr
        from_run = _read_json(demo_run.out / "folds" / "fold_000" / "result.json")
        assert json.loads(proc.stdout)["metrics"] == from_run["metrics"]


class TestAggregate:
    def test_aggregate_over_the_fold_folders_gives_the_runs_summary_numbers(self, demo_run, follow_ups):
        agg_dir, proc = follow_ups["aggregate"]
        assert proc.returncode == 0, _describe(proc)
        printed = json.loads(proc.stdout)
        from_run = _read_json(demo_run.out / "summary.json")
        assert set(printed["metrics"]) == set(from_run["metrics"])
        for name, stats in from_run["metrics"].items():
            for key in ("n", "mean", "std", "ci_low", "ci_high"):
                assert printed["metrics"][name][key] == stats[key], (name, key)
        assert printed["best_fold"]["fold_id"] == from_run["best_fold"]["fold_id"]
        assert _read_json(agg_dir / "summary.json")["metrics"] == printed["metrics"]
        for name in SUMMARY_FILES:
            assert (agg_dir / name).is_file(), name

    def test_aggregate_keeps_each_folds_repeat_and_index(self, demo_run, follow_ups):
        _, proc = follow_ups["aggregate"]
        printed = json.loads(proc.stdout)
        from_run = _read_json(demo_run.out / "summary.json")
        assert [(f["repeat"], f["index"]) for f in printed["folds"]] == [
            (f["repeat"], f["index"]) for f in from_run["folds"]
        ]

    def test_aggregate_refuses_to_average_fewer_folds_than_expected(self, follow_ups):
        agg_dir, proc = follow_ups["aggregate-3"]
        assert proc.returncode == 3, _describe(proc)
        assert proc.stderr.startswith("error: only 2 of 3 folds succeeded")
        assert "fold 2: no result" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (agg_dir / "summary.json").exists()


# ----------------------------------------------------------------------------------- nothing overwritten


def _hashes(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def damage_attempts(demo_run, tmp_path_factory) -> dict[str, tuple[Path, dict[str, str], Proc]]:
    """The two damage cases, each on its own copy of a finished run: (copy, hashes before, outcome).

    "run-another-plan": ``run`` with another k on the run's folder.
    "train-fold-into-another-fold": fold 1 of the plan into fold 0's folder, whose checkpoints are gone.
    """
    tmp = tmp_path_factory.mktemp("damage")
    copies = {name: tmp / name for name in ("run-another-plan", "train-fold-into-another-fold")}
    for copy in copies.values():
        shutil.copytree(demo_run.out, copy)
    shutil.rmtree(copies["train-fold-into-another-fold"] / "folds" / "fold_000" / "checkpoints")
    before = {name: _hashes(copy) for name, copy in copies.items()}
    into = copies["train-fold-into-another-fold"]
    procs = cli_all(
        {
            "run-another-plan": [
                *("run", "--root", demo_run.root, "--output-dir", copies["run-another-plan"], "--k", "3"),
                *TRAINING,
            ],
            "train-fold-into-another-fold": [
                *("train-fold", "--plan", into / "plan.json", "--fold-id", "1"),
                *("--output-dir", into / "folds" / "fold_000", *TRAINING),
            ],
        }
    )
    return {name: (copies[name], before[name], procs[name]) for name in copies}


class TestNothingIsOverwritten:
    @pytest.mark.parametrize(
        ("case", "message"),
        [
            pytest.param("run-another-plan", "holds another run's plan", id="run-another-plan"),
            pytest.param(
                "train-fold-into-another-fold", "holds another fold's work", id="train-fold-into-another-fold"
            ),
        ],
    )
    def test_is_refused_with_every_file_unchanged(self, damage_attempts, case, message):
        folder, before, proc = damage_attempts[case]
        assert proc.returncode == 2, _describe(proc)
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert _hashes(folder) == before


# ---------------------------------------------------------------------------- candidates and compare


class TestCandidates:
    def test_prints_the_comparison_the_choice_and_the_refit(self, runs):
        run = runs["candidates"]
        assert run.proc.returncode == 0, _describe(run.proc)
        out = run.proc.stdout
        assert "candidates (mean [corrected interval]):" in out
        assert "against " in out and "(best mean), paired by fold" in out
        assert any(verdict in out for verdict in ("BETTER", "WORSE", "NO DETECTABLE DIFFERENCE"))
        assert "chosen: " in out and "rule: " in out
        assert "no hold-out was planned" in out and "model to ship: " in out
        for label in ("same / fold 0", "slow / fold 1", "refit of "):
            assert label in run.proc.stderr

    def test_a_candidate_of_the_same_settings_reproduces_the_plain_run_fold_by_fold(self, runs, demo_run):
        run = runs["candidates"]
        plain = _results(demo_run.out)
        same = [_read_json(p) for p in sorted((run.out / "folds" / "same").glob("fold_*/result.json"))]
        assert [r["metrics"] for r in same] == [r["metrics"] for r in plain], "same folds, same seed"
        assert (run.out / "plan.json").read_bytes() == (demo_run.out / "plan.json").read_bytes()

    def test_the_refit_trains_the_chosen_candidate_on_every_episode(self, runs):
        summary = _read_json(runs["candidates"].out / "summary.json")
        chosen = summary["comparison"]["selection"]["chosen"]
        refit = _read_json(runs["candidates"].out / "refit" / "result.json")
        assert sorted(refit["train_episodes"]) == list(range(DEMO_EPISODES)) and refit["val_episodes"] == []
        assert summary["final_test"]["candidate"] == chosen == summary["candidate"]
        assert Path(summary["final_test"]["model_path"], "model.safetensors").is_file()
        rows = (runs["candidates"].out / "folds.csv").read_text().splitlines()
        assert rows[0].startswith("candidate,fold_id") and len(rows) == 1 + 2 * len(CANDIDATES)


@pytest.fixture(scope="module")
def compared(runs, demo_run, tmp_path_factory) -> dict[str, tuple[Path, Proc]]:
    """``compare`` over the plain run and the candidates run (same plan), and over runs of two plans."""
    tmp = tmp_path_factory.mktemp("cli-compare")
    assert runs["candidates"].proc.returncode == 0, _describe(runs["candidates"].proc)
    folders = {"same-plan": tmp / "same-plan", "other-plan": tmp / "other-plan"}
    procs = cli_all(
        {
            "same-plan": [
                *("compare", demo_run.out, runs["candidates"].out, "--output-dir", folders["same-plan"]),
                *("--baseline", "demo-run"),
            ],
            "other-plan": [
                "compare",
                demo_run.out,
                runs["recorded"].out,
                "--output-dir",
                folders["other-plan"],
            ],
        }
    )
    return {name: (folders[name], proc) for name, proc in procs.items()}


class TestCompare:
    def test_compares_every_candidate_of_runs_that_share_a_plan_fold_by_fold(self, compared):
        folder, proc = compared["same-plan"]
        assert proc.returncode == 0, _describe(proc)
        summary = _read_json(folder / "summary.json")
        names = [c["name"] for c in summary["comparison"]["candidates"]]
        assert names == ["demo-run", "candidates-run.same", "candidates-run.slow"]
        assert (summary["comparison"]["reference"], summary["comparison"]["reference_is_baseline"]) == (
            "demo-run",
            True,
        )
        pairs = {(c["candidate"], c["metric"]): c for c in summary["comparison"]["comparisons"]}
        same = pairs[("candidates-run.same", "val_l1")]
        # The same settings on the same folds with the same seed: every difference is exactly 0.
        assert same["differences"] == [0.0, 0.0] and same["verdict"] == "no detectable difference"
        assert "candidates-run.slow" in proc.stdout and "chosen: " in proc.stdout
        for name in ("report.html", "folds.csv", "comparison.png", "plan.json"):
            assert (folder / name).is_file(), name

    def test_runs_of_different_plans_are_refused(self, compared):
        folder, proc = compared["other-plan"]
        assert proc.returncode == 2, _describe(proc)
        assert "different fold plans" in proc.stderr and "Traceback" not in proc.stderr
        assert not (folder / "summary.json").exists()
