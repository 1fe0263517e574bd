#!/usr/bin/env python
"""Orchestration overhead: the local k=5 DAG run against the same five folds run by the CLI in one process.

Sides, interleaved (cli, dag.test, airflow, cli, dag.test, airflow, ...), each run a subprocess with a
fresh output folder, on the same dataset, folds (split seed 0, shuffled), training settings and torch
threads:

- ``cli``: ``python -m lerobot_kfold run --root DATA --k 5 --parallel 1 --torch-threads T ...``: plan,
  five folds one after another in this one process, aggregate.
- ``dag.test``: the ``lerobot_kfold_cv`` DAG with backend local as ``make demo`` runs it:
  ``scripts/demo_dag.py --conf {...}`` (Airflow's ``dag.test()``: every task in this one process, folds one
  after another) on a migrated SQLite ``AIRFLOW_HOME``. The DAG sets a fold's torch threads to
  ``cpu_count // LEROBOT_KFOLD_MAX_PARALLEL_FOLDS``, so this side runs with that variable at
  ``cpu_count / T`` (``make demo`` leaves it at its default 2: one thread per fold on 2 cores, which is
  ``--threads 1`` here).
- ``airflow`` (only when T = cpu_count, so that max parallel folds is 1): the same DAG on a real local
  Airflow (``scripts/airflow_local.py``: scheduler, LocalExecutor, triggerer, ...), every task in its own
  process. Airflow is started before each such run and stopped after it (not timed), so it does not load
  the machine during the other sides' runs; the run is timed from the REST trigger to the run's end date.

Reported per side: wall time (medians), the sum of the folds' own ``wall_s`` (from each fold's
``result.json``: training, validation and checkpoints inside ``train_fold``), the rest ("outside the
folds"), and the ratio to the CLI. For the DAG sides the rest is split by task-instance start and end
dates (from the metadata database): start-up before the first task, validate, prepare_dataset, plan,
aggregate, the folds' task time beyond their ``wall_s``, the gaps between tasks, and the end after the
last task; for the CLI by its progress lines (planned -> each fold done).

Examples (k=5, 200 steps, validation and checkpoints every 100 steps, batch 64, 2 repeats). The default
2 torch threads (on 2 cores) lets the real-Airflow side run its folds one at a time (max parallel folds 1);
about 10 minutes on an idle 2-core machine. ``--threads 1`` is ``make demo``'s setting (the airflow side is
then skipped: it would train two folds at once); about 7 minutes::

    .venv/bin/python bench/orchestration_overhead.py --json .cache/bench/orchestration.json
    .venv/bin/python bench/orchestration_overhead.py --threads 1 --sides cli dag.test
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import (
    BENCH_CACHE,
    REPO,
    bench_env,
    ensure_demo_dataset,
    exit_on_sigterm,
    machine_info,
    markdown_table,
    median,
    progress,
    ratio,
    run_measured,
    write_json,
)

from lerobot_kfold import storage  # benchlib puts include/ on sys.path

DAG_ID = "lerobot_kfold_cv"
FOLD_TASK = "kfold_cv.train_fold"
SIDES = ("cli", "dag.test", "airflow")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Wall time of the local k-fold DAG (dag.test as `make demo` runs it, and optionally a real local "
            "Airflow) against the same folds through the CLI in one process. Progress on stderr, a table "
            "on stdout."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=BENCH_CACHE / "so101_40",
        help="LeRobot dataset; the simulator demo dataset is recorded there first if missing",
    )
    parser.add_argument("--episodes", type=int, default=40, help="episodes to record when --root is missing")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="training steps per fold")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads per fold (the DAG sets them as cpu_count // LEROBOT_KFOLD_MAX_PARALLEL_FOLDS)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs per side (interleaved)")
    parser.add_argument(
        "--sides",
        nargs="+",
        choices=SIDES,
        default=list(SIDES),
        help="sides to run (airflow needs T = nproc)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter of every side")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=BENCH_CACHE / "orchestration",
        help="scratch folder (storage, AIRFLOW_HOME, logs); emptied first",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    if args.threads < 1 or cpus % args.threads:
        parser.error(f"--threads must divide the CPU count ({cpus}): the DAG sets threads as cpu_count // N")
    if "airflow" in args.sides and args.threads != cpus:
        progress(
            f"side airflow needs --threads {cpus} (max parallel folds 1, else folds run in parallel): skipped"
        )
        args.sides = [s for s in args.sides if s != "airflow"]
    return args


# ---------------------------------------------------------------------------------------- helpers


def _utc(value: str | None) -> float | None:
    """A metadata-database date (naive UTC 'YYYY-MM-DD HH:MM:SS.ffffff', or ISO with a zone) as epoch s."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def fold_walls(run_folder: Path, k: int) -> list[float | None]:
    """The folds' own wall_s from their result.json files."""
    walls: list[float | None] = []
    for fold_id in range(k):
        path = run_folder / "folds" / f"fold_{fold_id:03d}" / "result.json"
        walls.append(json.loads(path.read_text()).get("wall_s") if path.is_file() else None)
    return walls


def dag_breakdown(tis: list[dict[str, Any]], t0: float, t_end: float, walls: list[float | None]) -> dict:
    """Split a DAG run's wall time by its task instances (dicts: task, map_index, start, end)."""
    tis = sorted((t for t in tis if t["start"] and t["end"]), key=lambda t: t["start"])
    out: dict[str, Any] = {}
    if not tis:
        return out
    out["before_first_task_s"] = tis[0]["start"] - t0
    for name in ("validate", "prepare_dataset", "plan"):
        out[f"{name}_s"] = sum(t["end"] - t["start"] for t in tis if t["task"].endswith("." + name))
    folds = [t for t in tis if t["task"] == FOLD_TASK]
    out["fold_tasks_s"] = sum(t["end"] - t["start"] for t in folds)
    present = [w for w in walls if w is not None]
    out["fold_wall_sum_s"] = sum(present)
    out["fold_task_beyond_wall_s"] = out["fold_tasks_s"] - out["fold_wall_sum_s"]
    out["aggregate_s"] = sum(t["end"] - t["start"] for t in tis if t["task"].endswith(".aggregate"))
    gaps = 0.0
    for prev, nxt in itertools.pairwise(tis):
        gaps += max(0.0, nxt["start"] - prev["end"])
    out["gaps_between_tasks_s"] = gaps
    out["after_last_task_s"] = t_end - max(t["end"] for t in tis)
    out["fold_task_beyond_wall_per_fold_s"] = [
        round((t["end"] - t["start"]) - w, 3)
        for t, w in zip(sorted(folds, key=lambda t: t["map_index"]), walls, strict=False)
        if w is not None
    ]
    return out


def cli_breakdown(record, walls: list[float | None]) -> dict[str, Any]:
    """Split the CLI's wall time by its progress lines: before the plan line, each fold, after the last."""
    planned = next((t for t, _, line in record.lines if line.startswith("planned ")), None)
    done = [t for t, _, line in record.lines if re.match(r"fold \d+ done", line)]
    out: dict[str, Any] = {}
    if planned is None or not done:
        return out
    out["before_folds_s"] = planned  # interpreter, imports, dataset metadata, planning
    out["folds_span_s"] = done[-1] - planned
    out["fold_wall_sum_s"] = sum(w for w in walls if w is not None)
    out["between_folds_s"] = out["folds_span_s"] - out["fold_wall_sum_s"]
    out["after_folds_s"] = record.wall_s - done[-1]  # aggregation, summary files and report, exit
    return out


# ---------------------------------------------------------------------------------------- sides


def run_cli(args, env: dict[str, str], out: Path, log: Path) -> dict[str, Any]:
    cmd = [args.python, "-m", "lerobot_kfold", "run", "--root", str(args.root), "--output-dir", str(out)]
    cmd += ["--k", str(args.k), "--parallel", "1", "--steps", str(args.steps)]
    cmd += ["--eval-every", str(args.eval_every), "--save-every", str(args.save_every)]
    cmd += ["--batch-size", str(args.batch_size), "--sim-eval-episodes", "0"]
    cmd += ["--torch-threads", str(args.threads), "--json"]
    record = run_measured(cmd, env=env, log_path=log)
    walls = fold_walls(out, args.k)
    run: dict[str, Any] = {"cmd": cmd, "wall_s": record.wall_s, "peak_rss_mib": record.peak_rss_mib}
    try:
        summary = json.loads(record.stdout)
        n_ok = summary.get("totals", {}).get("n_succeeded")
    except json.JSONDecodeError:
        n_ok = None
    run["ok"] = record.returncode == 0 and n_ok == args.k
    run["error"] = None if run["ok"] else f"exit {record.returncode}: {record.tail(10)}"
    run["fold_wall_s"] = walls
    run["breakdown"] = cli_breakdown(record, walls)
    return run


def dag_conf(args) -> dict[str, Any]:
    return {
        "dataset_root": str(args.root),
        "k": args.k,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "save_every": args.save_every,
        "batch_size": args.batch_size,
        "sim_eval_episodes": 0,
        "backend": "local",
    }


def airflow_env(args, storage_root: Path, home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "LEROBOT_KFOLD_STORAGE": str(storage_root),
        "LEROBOT_KFOLD_MAX_PARALLEL_FOLDS": str((os.cpu_count() or 1) // args.threads),
    }


def run_dag_test(args, env: dict[str, str], storage_root: Path, home: Path, log: Path) -> dict[str, Any]:
    cmd = [args.python, str(REPO / "scripts" / "demo_dag.py"), "--conf", json.dumps(dag_conf(args))]
    t0 = time.time()
    record = run_measured(cmd, env=env, log_path=log)
    t_end = t0 + record.wall_s
    run: dict[str, Any] = {"cmd": cmd, "wall_s": record.wall_s, "peak_rss_mib": record.peak_rss_mib}
    db = sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True)
    try:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
        ).fetchone()
        rows = db.execute(
            "SELECT task_id, map_index, start_date, end_date, state FROM task_instance "
            "WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        ).fetchall()
    finally:
        db.close()
    tis = [
        {"task": r[0], "map_index": r[1], "start": _utc(r[2]), "end": _utc(r[3]), "state": r[4]} for r in rows
    ]
    folder = storage_root / "runs" / DAG_ID / storage.safe_name(run_id) / "kfold_cv"
    walls = fold_walls(folder, args.k)
    run["run_id"] = run_id
    run["ok"] = record.returncode == 0 and all(w is not None for w in walls)
    run["error"] = None if run["ok"] else f"exit {record.returncode}: {record.tail(10)}"
    run["fold_wall_s"] = walls
    run["breakdown"] = dag_breakdown(tis, t0, t_end, walls)
    return run


def run_airflow(args, env: dict[str, str], storage_root: Path, home: Path) -> dict[str, Any]:
    """One DAG run on a fresh-started local Airflow (start and stop not timed)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from scripts.airflow_local import LocalAirflow

    extra = {k: v for k, v in env.items() if k not in os.environ or os.environ[k] != v}
    extra.pop("AIRFLOW_HOME", None)  # LocalAirflow sets its own from `home`
    airflow = LocalAirflow(home, env=extra)
    run: dict[str, Any] = {"ok": False, "error": None}
    try:
        airflow.start()
        airflow.wait_for_dag(DAG_ID)
        time.sleep(5)  # let the fresh components settle
        run_id = f"bench_{int(time.time())}"
        t0 = time.time()
        response = airflow.api(
            "POST",
            f"/dags/{DAG_ID}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": dag_conf(args)},
        )
        response.raise_for_status()
        state = airflow.wait_for_run(DAG_ID, run_id, timeout=3600)
        dag_run = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
        t_end = _utc(dag_run["end_date"])
        tis = [
            {
                "task": t["task_id"],
                "map_index": t["map_index"],
                "start": _utc(t.get("start_date")),
                "end": _utc(t.get("end_date")),
                "state": t["state"],
            }
            for t in airflow.task_instances(DAG_ID, run_id)
        ]
    except Exception as exc:  # keep the other sides' results
        run["error"] = f"{type(exc).__name__}: {exc}"
        return run
    finally:
        airflow.stop()
    folder = storage_root / "runs" / DAG_ID / storage.safe_name(run_id) / "kfold_cv"
    walls = fold_walls(folder, args.k)
    run.update(
        run_id=run_id,
        wall_s=t_end - t0,
        peak_rss_mib=None,
        ok=state == "success" and all(w is not None for w in walls),
        fold_wall_s=walls,
        breakdown=dag_breakdown(tis, t0, t_end, walls),
    )
    if not run["ok"]:
        run["error"] = f"run {state}; see {home / 'airflow.log'}"
    return run


# ---------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    args.root = args.root.resolve()
    work = args.work_dir.resolve()
    env = bench_env(threads=args.threads)
    ensure_demo_dataset(args.root, args.episodes, args.python, env)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    storage_root = work / "storage"
    dag_home, af_home = work / "airflow_dagtest", work / "airflow_local"
    dag_env = {**env, **airflow_env(args, storage_root, dag_home)}
    af_env = {**env, **airflow_env(args, storage_root, af_home)}
    if "dag.test" in args.sides:
        progress(f"airflow db migrate in {dag_home} (once, not timed)")
        subprocess.run(
            [args.python, "-m", "airflow", "db", "migrate"], env=dag_env, check=True, capture_output=True
        )

    info_before = machine_info()
    progress(
        f"k={args.k}, {args.steps} steps, eval/save every {args.eval_every}/{args.save_every}, batch "
        f"{args.batch_size}, {args.threads} torch threads; sides {', '.join(args.sides)}, {args.repeats} "
        f"interleaved repeats; load {info_before['load_avg']}"
    )
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in args.sides}
    failures = 0
    for rep in range(args.repeats):
        for side in args.sides:
            progress(f"repeat {rep + 1}/{args.repeats}: {side} ... (load {os.getloadavg()[0]:.2f})")
            if side == "cli":
                run = run_cli(args, env, work / "cli" / f"run_{rep}", work / "logs" / f"cli_{rep}.log")
            elif side == "dag.test":
                run = run_dag_test(
                    args, dag_env, storage_root, dag_home, work / "logs" / f"dagtest_{rep}.log"
                )
            else:
                run = run_airflow(args, af_env, storage_root, af_home)
            run["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
            runs[side].append(run)
            if not run["ok"]:
                failures += 1
                progress(f"  {side} FAILED: {run['error']}")
            else:
                progress(
                    f"  {side}: wall {run['wall_s']:.1f}s, folds' own wall {sum(run['fold_wall_s']):.1f}s"
                )
            if args.json:
                write_json(args.json, {"benchmark": "orchestration_overhead", "runs": runs}, quiet=True)

    info_after = machine_info()
    table = summarize(args, runs)
    report(args, table, runs, info_before, info_after)
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "orchestration_overhead",
                "argv": sys.argv,
                "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "conf": dag_conf(args),
                "machine": info_before,
                "machine_after": info_after,
                "summary": table,
                "runs": runs,
            },
        )
    return 1 if failures else 0


def summarize(args, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for side, side_runs in runs.items():
        ok = [r for r in side_runs if r["ok"]]
        row: dict[str, Any] = {
            "n": len(ok),
            "wall_s": median([r["wall_s"] for r in ok]),
            "fold_wall_sum_s": median([sum(r["fold_wall_s"]) for r in ok]),
            "outside_folds_s": median([r["wall_s"] - sum(r["fold_wall_s"]) for r in ok]),
            "peak_rss_mib": median([r.get("peak_rss_mib") for r in ok]),
        }
        keys = list(
            dict.fromkeys(k for r in ok for k, v in r["breakdown"].items() if isinstance(v, int | float))
        )
        row["breakdown"] = {key: median([r["breakdown"].get(key) for r in ok]) for key in keys}
        table[side] = row
    cli = table.get("cli", {})
    for row in table.values():
        row["ratio_wall_vs_cli"] = ratio(row["wall_s"], cli.get("wall_s"))
        row["ratio_folds_vs_cli"] = ratio(row["fold_wall_sum_s"], cli.get("fold_wall_sum_s"))
        row["extra_vs_cli_s"] = (
            row["wall_s"] - cli["wall_s"] if row["wall_s"] is not None and cli.get("wall_s") else None
        )
    return table


def _r(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(args, table, runs, info_before, info_after) -> None:
    print(
        f"\nk={args.k}, {args.steps} steps, eval/save every {args.eval_every}/{args.save_every}, batch "
        f"{args.batch_size}, {args.threads} torch threads, medians of {args.repeats}"
    )
    header = [
        "side",
        "runs",
        "wall s",
        "folds' own wall s",
        "outside the folds s",
        "ratio wall / cli",
        "extra vs cli s",
        "peak RSS MiB",
    ]
    rows = [
        [
            side,
            str(row["n"]),
            _r(row["wall_s"]),
            _r(row["fold_wall_sum_s"]),
            _r(row["outside_folds_s"]),
            _r(row["ratio_wall_vs_cli"], 2),
            _r(row["extra_vs_cli_s"]),
            _r(row["peak_rss_mib"], 0),
        ]
        for side, row in table.items()
    ]
    print(markdown_table(header, rows))
    print(
        "\nSingle runs (wall s): "
        + "; ".join(f"{s} " + " / ".join(_r(r.get("wall_s")) for r in rs) for s, rs in runs.items())
    )
    print("\nWhere the time outside the folds goes (medians, s):")
    for side, row in table.items():
        parts = ", ".join(f"{key.removesuffix('_s')} {_r(v)}" for key, v in row["breakdown"].items())
        print(f"  {side}: {parts}")
    print(
        f"\nmachine: {info_before.get('nproc')} CPUs, {info_before.get('cpu')}; load before "
        f"{info_before.get('load_avg')}, after {info_after.get('load_avg')}"
    )


if __name__ == "__main__":
    sys.exit(main())
