#!/usr/bin/env python
"""Fan-out: a real Airflow runs k deferred Modal folds of T seconds each; wall / T and component memory.

A private Airflow (``--launcher``, default ``scripts.airflow_local:LocalAirflow``: LocalExecutor, SQLite
or what ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` names) runs ``lerobot_kfold_cv`` with ``backend=modal``
against the fake Modal control plane (``scripts/fake_modal``) serving ``bench/fanout_functions.py``,
whose fold calls sleep T s: all above T is orchestration. Nothing but Airflow limits the fan-out (max
parallel folds = the largest k, ``--parallelism``). One DAG run per k: run wall / T, fold phase / T,
where each fold's time goes (``PHASES``) and each component's peak memory; docs/benchmarks.md, section 4.

Another topology (CeleryExecutor, say) is another ``--launcher module:attr``: ``attr(home, env=dict)``
returns an object with ``start()``, ``stop()``, ``wait_for_dag``, ``api``, ``run_state``,
``task_instances`` and ``xcom`` as ``LocalAirflow`` has them, ``home`` (task logs in ``home/logs``) and
``process`` (leader of the components' process group; memory is sampled if set); ``--components`` names
the ``airflow <component>`` processes to sample and watch.

Example (T = 120 s; about 10-12 minutes)::

    .venv/bin/python bench/fanout.py --ks 4 16 64 --json .cache/bench/fanout.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import benchlib
import httpx
from benchlib import BENCH_CACHE, REPO, markdown_table, median, progress

from scripts.fake_modal.control_plane import FakeModalControlPlane

DAG_ID, FOLD_TASK = "lerobot_kfold_cv", "kfold_cv.train_fold"
WATCHED = ("scheduler", "triggerer")  # if either exits, the run never ends
FUNCTIONS = {
    "lerobot-kfold/prepare_dataset": "fanout_functions:prepare_dataset",
    "lerobot-kfold/train_fold": "fanout_functions:train_fold",
    "lerobot-kfold/aggregate": "lerobot_kfold.modal_app:aggregate",
}
# A deferred fold's phases in the order they happen: (label, from mark, to mark).
PHASES = (
    ("start -> spawn", "start", "spawn"),
    ("deferred -> trigger runs", "log_deferred", "log_trigger_started"),
    ("spawn -> finish", "spawn", "finish"),
    ("finish -> trigger event", "finish", "log_trigger_event"),
    # A fold ended by its trigger (end_from_trigger) goes from the event straight to its end:
    ("event -> end", "log_trigger_event", "end"),
    # ... one resumed in a worker is queued again, starts, and ends there:
    ("event -> re-queued", "log_trigger_event", "queued"),
    ("re-queued -> resumed", "queued", "log_resumed"),
    ("resumed -> end", "log_resumed", "end"),
)
# Task-log events (the task's and its trigger's lines) that mark them; "resumed" is found separately.
LOG_MARKS = {
    "deferred": re.compile(r"^Pausing task as DEFERRED"),
    "trigger_started": re.compile(r"^trigger .* starting$"),
    "trigger_event": re.compile(r"^Trigger fired event"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchlib.parser(
        "Fan-out of the lerobot_kfold_cv DAG (backend modal) on a real Airflow against the fake Modal "
        "control plane: wall / T per k, where the time goes, and component memory."
    )
    add = parser.add_argument
    add("--ks", type=int, nargs="+", default=[4, 16, 64], help="fold counts, run in order")
    add("--fold-seconds", type=float, default=120.0, help="T: seconds every fold call takes")
    add("--poll-interval", type=float, default=5.0, help="LEROBOT_KFOLD_POLL_INTERVAL_S")
    add("--parallelism", type=int, default=128, help="core.parallelism (task processes at once)")
    add("--episodes", type=int, default=128, help="synthetic episodes (>= the largest k)")
    add("--launcher", default="scripts.airflow_local:LocalAirflow", help="module:attr (see above)")
    add("--components", nargs="+", default=["scheduler", "triggerer", "dag-processor"])
    add("--settle", type=float, default=5.0, help="idle seconds before each run")
    add("--work-dir", type=Path, default=BENCH_CACHE / "fanout", help="scratch folder; emptied first")
    args = parser.parse_args(argv)
    if max(args.ks) > args.episodes or min(args.ks) < 2:
        parser.error("every k must be >= 2 and <= --episodes")
    return args


# ---------------------------------------------------------------------------------------- /proc memory


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, cmdline, process group) of every live process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if fields[0] != "Z":
                table[int(stat.parent.name)] = (int(fields[1]), cmdline, int(fields[2]))
    return table


def _memory_mib(pid: int, pss: bool) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        if not pss:
            return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _is_component(cmdline: str, component: str) -> bool:
    """The component's own process: ``.../airflow <component> ...`` run by Python (not a bash wrapper)."""
    parts = cmdline.split()
    for i, part in enumerate(parts[:-1]):
        if part.endswith("/airflow") and parts[i + 1] == component:
            return "python" in os.path.basename(parts[0])
    return False


class Components:
    """This Airflow's component processes (``airflow <component>``) in one process group, from /proc.

    Only that group counts: other Airflows may share the machine. ``memory()`` sums RSS (pages shared by
    forked processes counted once per process) and PSS (shared pages divided among their users) over
    each component's process tree: it and its descendants (LocalExecutor workers and task processes,
    the triggerer's trigger runner).
    """

    def __init__(self, group: int, names: list[str]) -> None:
        self.group, self.names = group, names

    def roots(self, table: dict[int, tuple[int, str, int]], name: str) -> list[int]:
        # Forked children (LocalExecutor workers) may keep the parent's command line: the topmost only.
        return [
            pid
            for pid, (ppid, cmd, pgid) in table.items()
            if pgid == self.group
            and _is_component(cmd, name)
            and not _is_component(table.get(ppid, (0, "", 0))[1], name)
        ]

    def exited(self, names: tuple[str, ...] | list[str]) -> list[str]:
        table = _proc_table()
        return [name for name in names if name in self.names and not self.roots(table, name)]

    def memory(self) -> dict[str, dict[str, float]]:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        sample = {}
        for name in self.names:
            tree, todo = set(), self.roots(table, name)
            while todo:
                if (pid := todo.pop()) not in tree:
                    tree.add(pid)
                    todo.extend(children.get(pid, []))
            rss, pss = (sum(_memory_mib(p, pss=pss) for p in tree) for pss in (False, True))
            sample[name] = {"rss_mib": rss, "pss_mib": pss, "procs": len(tree)}
        return sample


def memory_summary(idle: dict, samples: list[dict], names: list[str]) -> dict[str, dict[str, Any]]:
    peak = {
        n: {f"peak_{key}": max((s[n][key] for s in samples), default=None) for key in idle[n]} for n in names
    }
    return {n: {"idle_pss_mib": idle[n]["pss_mib"], **peak[n]} for n in names}


# ---------------------------------------------------------------------------------------- timings


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def task_log_marks(log_dir: Path) -> dict[str, float]:
    """First time of each ``LOG_MARKS`` event in a task instance's log files (JSON lines), and the time
    the task resumed after its trigger fired."""
    lines: list[tuple[float, str]] = []
    for path in sorted(log_dir.glob("attempt=*.log*")):
        for raw in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, AttributeError, TypeError):
                entry = json.loads(raw)
                lines.append((_ts(entry["timestamp"]), str(entry.get("event", ""))))
    marks: dict[str, float] = {}
    for t, event in sorted(line for line in lines if line[0] is not None):
        for name, pattern in LOG_MARKS.items():
            if name not in marks and pattern.search(event):
                marks[name] = t
        if "trigger_event" in marks and "resumed" not in marks and event.startswith("::group::Pre Execute"):
            marks["resumed"] = t
    return marks


def analyse_run(airflow, plane, run_id: str, triggered_at: float, seen: set[str]) -> dict[str, Any]:
    run = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
    tis = airflow.task_instances(DAG_ID, run_id)
    folds = sorted((t for t in tis if t["task_id"] == FOLD_TASK), key=lambda t: t["map_index"])
    events = [e for e in plane.events() if e.get("call_id") not in seen]  # this run's calls
    spawn_t = {e["call_id"]: e["t"] for e in events if e["type"] == "spawn" and e["function"] == "train_fold"}
    finish_t = {e["call_id"]: e["t"] for e in events if e["type"] == "finished" and e["call_id"] in spawn_t}
    log_root = airflow.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={FOLD_TASK}"
    per_fold = []
    for ti in folds:
        call_id = None
        with contextlib.suppress(Exception):
            call_id = airflow.xcom(DAG_ID, run_id, FOLD_TASK, key="modal_call_id", map_index=ti["map_index"])
        marks = task_log_marks(log_root / f"map_index={ti['map_index']}")
        spawn, finish = spawn_t.get(call_id), finish_t.get(call_id)
        row = {"map_index": ti["map_index"], "state": ti["state"], "try_number": ti.get("try_number") or 1}
        # "queued": for a resumed deferred task, its re-queue.
        for key, field in (("queued", "queued_when"), ("start", "start_date"), ("end", "end_date")):
            row[key] = _ts(ti.get(field))
        row.update(call_id=call_id, spawn=spawn, finish=finish, **{f"log_{n}": t for n, t in marks.items()})
        if "resumed" not in marks:  # ended by its trigger: never re-queued (queued_when is the first queue)
            row["queued"] = None
        per_fold.append(row)
    # Folds that needed an Airflow retry mix two tries' dates: left out of the phases, listed as retried.
    first_tries = [r for r in per_fold if r["try_number"] == 1]
    ends = [r["end"] for r in per_fold if r["end"]]
    first_spawns = [r["spawn"] for r in first_tries if r["spawn"]]
    first_start = min((r["start"] for r in per_fold if r["start"]), default=None)
    run_end = _ts(run.get("end_date"))
    other_tasks = {}
    for ti in (ti for ti in tis if ti["task_id"] != FOLD_TASK):
        start, queued = _ts(ti.get("start_date")), _ts(ti.get("queued_when"))
        wait = start - queued if start and queued else None
        other_tasks[ti["task_id"].split(".")[-1]] = {"queued_to_start_s": wait, "duration_s": ti["duration"]}
    return {
        "run_id": run_id,
        "state": run.get("state"),
        "folds_succeeded": sum(1 for ti in folds if ti["state"] == "success"),
        "retried_folds": [r["map_index"] for r in per_fold if r["try_number"] > 1],
        "calls_spawned": len(spawn_t),
        "run_wall_s": run_end - triggered_at if run_end else None,
        "fold_phase_s": max(ends) - first_start if ends and first_start else None,
        "before_folds_s": first_start - triggered_at if first_start else None,
        "after_folds_s": run_end - max(ends) if run_end and ends else None,
        # First fold start -> last first-try spawn: until every GPU call was out.
        "last_spawn_after_first_start_s": max(first_spawns) - first_start if first_spawns else None,
        # Last call finished -> last fold task ended: the burst of resumes.
        "tail_after_last_finish_s": max(ends) - max(finish_t.values()) if ends and finish_t else None,
        "phases_s": {
            label: [r[b] - r[a] for r in first_tries if r.get(a) and r.get(b)] for label, a, b in PHASES
        },
        "other_tasks": other_tasks,
        "folds": per_fold,
    }


# ---------------------------------------------------------------------------------------- running


def wait_for_run(airflow, run_id: str, timeout: float, components: Components | None) -> tuple[str, dict]:
    """Poll the run every 2 s until it ends, or until the scheduler or triggerer exited ("stuck"); sample
    the components' memory at every poll.

    A failed or slow REST call is counted, not fatal: the API server also serves the task processes'
    execution API, so a fan-out slows it down.
    """
    deadline = time.monotonic() + timeout
    latencies, errors, state, samples = [], 0, "unknown", []
    while state not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s (last state {state})")
        started = time.monotonic()
        try:
            state = airflow.run_state(DAG_ID, run_id)
        except httpx.HTTPError:
            errors += 1
        latencies.append(time.monotonic() - started)
        if components is not None:
            with contextlib.suppress(Exception):  # a process may vanish between two reads
                samples.append(components.memory())
            if dead := components.exited(WATCHED):
                time.sleep(5.0)  # a component that restarts has not gone
                if dead := components.exited(dead):
                    state = f"stuck: {' and '.join(dead)} exited"
                    break
        time.sleep(2.0)
    return state, {"calls": len(latencies), "failed": errors, "max_s": max(latencies), "memory": samples}


def component_errors(airflow) -> list[str]:
    """The components' error and exit lines from the Airflow log (why a run got stuck)."""
    pattern = re.compile(r"Exited (execute|trigger) loop|Exception when executing|OperationalError\)")
    path = airflow.home / "airflow.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return [line[:240] for line in lines if pattern.search(line)][-20:]


def start_plane(args: argparse.Namespace, work: Path) -> FakeModalControlPlane:
    paths = [
        str(REPO / "bench"),
        str(REPO / "include"),
        *filter(None, os.environ.get("PYTHONPATH", "").split(":")),
    ]
    env = {
        "PYTHONPATH": os.pathsep.join(paths),
        "LEROBOT_KFOLD_STORAGE": str(work / "modal-volume"),
        "FANOUT_FOLD_SECONDS": str(args.fold_seconds),
        "FANOUT_EPISODES": str(args.episodes),
        "MPLCONFIGDIR": str(REPO / ".cache" / "matplotlib"),
        "HF_HUB_OFFLINE": "1",
    }
    return FakeModalControlPlane(FUNCTIONS, work / "plane", env=env).start()


def airflow_env(args: argparse.Namespace, work: Path, plane: FakeModalControlPlane) -> dict[str, str]:
    client = plane.client_env()
    connection = {
        "conn_type": "modal",
        "login": client["MODAL_TOKEN_ID"],
        "password": client["MODAL_TOKEN_SECRET"],
    }
    return {
        "LEROBOT_KFOLD_STORAGE": str(work / "storage"),
        "LEROBOT_KFOLD_POLL_INTERVAL_S": str(args.poll_interval),
        "LEROBOT_KFOLD_MAX_PARALLEL_FOLDS": str(max(args.ks)),
        "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(args.parallelism, *args.ks)),
        "MODAL_SERVER_URL": plane.url,
        "AIRFLOW_CONN_MODAL_DEFAULT": json.dumps(connection),
        "HF_HUB_OFFLINE": "1",
        "MPLCONFIGDIR": str(REPO / ".cache" / "matplotlib"),
    }


def run_one(args, airflow, plane, components: Components | None, k: int) -> dict[str, Any]:
    """One DAG run of k folds, measured."""
    conf = {"k": k, "backend": "modal", "gpu": "H100", "steps": 1000, "eval_every": 500, "save_every": 500}
    conf.update(batch_size=64, dataset_root="datasets/fanout_synthetic")
    time.sleep(args.settle)
    idle = components.memory() if components is not None else None
    run_id, seen = f"fanout_k{k}_{int(time.time())}", {e["call_id"] for e in plane.events() if "call_id" in e}
    load = os.getloadavg()
    progress(f"k={k}: triggering {run_id} (T={args.fold_seconds:g}s, load {load[0]:.2f})")
    triggered_at = time.time()
    body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
    airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json=body).raise_for_status()
    state, rest = wait_for_run(airflow, run_id, args.fold_seconds + 1200, components)
    result = {"k": k, **analyse_run(airflow, plane, run_id, triggered_at, seen)}
    for key in ("run_wall", "fold_phase"):
        value = result[f"{key}_s"]
        result[f"{key}_over_T"] = value / args.fold_seconds if value is not None else None
    if idle is not None:
        result["memory"] = memory_summary(idle, rest.pop("memory"), args.components)
    result.update(
        conf=conf, rest_api_while_running=rest, load_avg_before=load, load_avg_after=os.getloadavg()
    )
    if state.startswith("stuck"):
        result["state"] = state
    if state != "success" or result["folds_succeeded"] != k:
        result["log_errors"] = component_errors(airflow)
        progress(f"k={k}: run {state}, {result['folds_succeeded']}/{k} folds succeeded")
        for line in result["log_errors"][-5:]:
            progress(f"  {line}")
    return result


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    def r(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    def trio(values: list[float]) -> str:
        return f"{median(values):.1f} ({min(values):.1f}-{max(values):.1f})" if values else "-"

    db = args.metadata_db
    print(
        f"\nFan-out, T = {args.fold_seconds:g} s per fold call, poll interval {args.poll_interval:g} s, "
        f"parallelism {args.parallelism}, launcher {args.launcher}, metadata database {db}; one run per k"
    )
    header = ["k", "state", "run wall s", "run wall / T", "fold phase s", "fold phase / T"]
    header += ["before folds s", "after folds s", *(f"{c} peak RSS MiB (PSS)" for c in args.components)]
    rows = []
    for run in runs:
        mem = [(run.get("memory") or {}).get(c, {}) for c in args.components]
        rows.append(
            [str(run["k"]), f"{run['state']} {run['folds_succeeded']}/{run['k']}", r(run["run_wall_s"])]
            + [r(run["run_wall_over_T"], 2), r(run["fold_phase_s"]), r(run["fold_phase_over_T"], 2)]
            + [r(run["before_folds_s"]), r(run["after_folds_s"])]
            + [f"{r(m.get('peak_rss_mib'), 0)} ({r(m.get('peak_pss_mib'), 0)})" for m in mem]
        )
    print(markdown_table(header, rows))
    print("\nWhere a fold's time goes (first tries only: median (min-max) s):")
    phases = [label for label, _, _ in PHASES]
    header = ["k", "last spawn after first start", *phases, "last finish -> last end"]
    rows = [
        [str(run["k"]), r(run["last_spawn_after_first_start_s"])]
        + [trio(run["phases_s"][label]) for label in phases]
        + [r(run["tail_after_last_finish_s"])]
        for run in runs
    ]
    print(markdown_table(header, rows))
    for run in runs:
        rest, k = run["rest_api_while_running"], run["k"]
        print(f"k={k}: retried folds {run['retried_folds']}, {run['calls_spawned']} fold calls spawned")
        print(f"  GET the run: {rest['calls']} calls, {rest['failed']} failed, slowest {rest['max_s']:.1f}s")
        for name, v in run["other_tasks"].items():
            print(f"  {name}: queued -> start {r(v['queued_to_start_s'])}s, duration {r(v['duration_s'])}s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    benchlib.exit_on_sigterm()
    work = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    for folder in ("modal-volume", "storage"):
        (work / folder).mkdir(parents=True)
    before = benchlib.environment()
    progress(f"load before: {before['load_avg']}; starting the fake Modal control plane")
    plane = start_plane(args, work)
    env = airflow_env(args, work, plane)
    module, _, attr = args.launcher.partition(":")
    airflow = getattr(importlib.import_module(module), attr)(work / "airflow", env=env)
    components, runs = None, []
    try:
        progress(f"starting Airflow ({args.launcher})")
        started = time.time()
        airflow.start()
        airflow.wait_for_dag(DAG_ID)
        progress(f"Airflow up in {time.time() - started:.0f}s")
        if getattr(airflow, "process", None) is not None:
            components = Components(airflow.process.pid, args.components)
        for k in args.ks:
            runs.append(run_one(args, airflow, plane, components, k))
            progress(f"k={k}: {runs[-1]['state']}, run wall / T {runs[-1]['run_wall_over_T']}")
            benchlib.write_json(args, "fanout", {"environment_before": before, "runs": runs}, complete=False)
            if runs[-1]["state"].startswith("stuck"):
                break
    finally:
        progress("stopping Airflow and the control plane")
        airflow.stop()
        plane.stop()
    # The scheme of the launcher's metadata database (its own setting, else the environment's, else SQLite).
    launcher_env = airflow.environment() if hasattr(airflow, "environment") else os.environ
    args.metadata_db = launcher_env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").split(":")[0]
    report(args, runs)
    benchlib.finish(args, "fanout", {"environment_before": before, "airflow_env": env, "runs": runs})
    return 0 if all(r["state"] == "success" and r["folds_succeeded"] == r["k"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
