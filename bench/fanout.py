#!/usr/bin/env python
"""Fan-out: a real Airflow runs k = 4, 16, 64 Modal folds of T seconds each; wall / T and component memory.

One private Airflow (``scripts/airflow_local.py``: API server, scheduler, DAG processor, triggerer;
LocalExecutor, SQLite) runs the ``lerobot_kfold_cv`` DAG with ``backend=modal`` against the fake Modal
control plane (``tests/fake_modal``), whose functions are ``bench/fanout_functions.py``: every fold call
sleeps T seconds (a GPU fold that costs no CPU here), then writes its result file. So everything above
T is orchestration: task start-ups, the scheduler loop, the triggerer's polling.

Airflow is set up so that nothing but Airflow itself limits the fan-out: ``LEROBOT_KFOLD_MAX_PARALLEL_FOLDS``
(the DAG's ``max_active_tis_per_dagrun``) is the largest k, ``core.parallelism`` is ``--parallelism``
(default 128: LocalExecutor worker processes, so task processes running at once; a deferred task frees
its slot), ``core.max_active_tasks_per_dag`` is the larger of the two, the default pool has 128 slots
(deferred tasks take none), the fold status poll interval is ``--poll-interval``.

Per k, one DAG run (the runs one after another on the same Airflow), reported:

- ``run wall / T``: trigger (REST POST) to the run's end date (validate, prepare_dataset, plan, the
  folds, aggregate);
- ``fold phase / T``: first ``train_fold`` start to last ``train_fold`` end (REST task-instance dates);
- where the fold phase's time goes, from the task logs and the control plane's events: the spread of
  the spawns (last spawn - first fold start), the call itself (T), the wait for the trigger to notice
  (finish -> trigger event), and the resume (trigger event -> task end);
- peak memory of the scheduler and the triggerer, each the component process plus all its descendants
  (LocalExecutor workers and task processes; the triggerer's trigger runner), sampled from /proc every
  ``--sample-interval`` s (PSS every 4th sample: it is costly to read): the sum of RSS (counts pages
  shared between forked processes once per process) and the sum of PSS (shared pages divided among
  their users; the honest sum), and the most processes seen in the tree.

Metadata database: SQLite by default (what ``scripts/airflow_local.py`` and ``make airflow`` use), or a
private PostgreSQL with ``--postgres`` (``initdb``/``pg_ctl`` on PATH, run as user ``postgres`` when this
runs as root; the drivers from ``--driver-path``, e.g. ``pip install --target .cache/bench/pgdeps
psycopg2-binary asyncpg``). On SQLite a burst of task starts can make the scheduler, triggerer and DAG
processor exit on ``database is locked``; the run then never ends, so the benchmark stops it as "stuck"
once the scheduler or triggerer is gone, with the log lines that say why.

Examples (T = 120 s; about 10-12 minutes for k = 4, 16, 64, about 5 for k = 64 alone)::

    .venv/bin/python bench/fanout.py --json .cache/bench/fanout.json
    .venv/bin/python bench/fanout.py --ks 64 --postgres --json .cache/bench/fanout_k64_pg.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    REPO,
    exit_on_sigterm,
    machine_info,
    markdown_table,
    progress,
    write_json,
)

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.airflow_local import LocalAirflow, free_port
from tests.fake_modal.control_plane import FakeModalControlPlane

DAG_ID = "lerobot_kfold_cv"
GROUP = "kfold_cv"
FOLD_TASK = f"{GROUP}.train_fold"
BENCH = Path(__file__).resolve().parent
COMPONENTS = ("scheduler", "triggerer", "dag-processor")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Fan-out of the lerobot_kfold_cv DAG (backend modal) on a real local Airflow against the fake "
            "Modal control plane: wall / T per k and scheduler/triggerer memory. Progress on stderr, "
            "tables on stdout."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 16, 64], help="fold counts, run in order")
    parser.add_argument("--fold-seconds", type=float, default=120.0, help="T: seconds every fold call takes")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="LEROBOT_KFOLD_POLL_INTERVAL_S")
    parser.add_argument(
        "--parallelism",
        type=int,
        default=128,
        help="core.parallelism: LocalExecutor worker processes, i.e. task processes running at once "
        "(a deferred task frees its slot); core.max_active_tasks_per_dag is max(this, largest k)",
    )
    parser.add_argument("--episodes", type=int, default=128, help="synthetic episodes (>= the largest k)")
    parser.add_argument("--sample-interval", type=float, default=0.5, help="seconds between memory samples")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="idle seconds before each run (memory baseline)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=REPO / ".cache" / "bench" / "fanout",
        help="scratch folder (Airflow home, storage, plane logs); emptied first",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="metadata database on a private PostgreSQL (initdb/pg_ctl from PATH, run as user 'postgres' "
        "when this runs as root) instead of SQLite; needs psycopg2 and asyncpg, see --driver-path",
    )
    parser.add_argument(
        "--driver-path",
        type=Path,
        default=REPO / ".cache" / "bench" / "pgdeps",
        help="folder put on Airflow's PYTHONPATH with --postgres (e.g. pip install --target FOLDER "
        "psycopg2-binary asyncpg)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    if max(args.ks) > args.episodes or min(args.ks) < 2:
        parser.error("every k must be >= 2 and <= --episodes")
    return args


# ---------------------------------------------------------------------------------------- /proc memory


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, cmdline, process group) of every live process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        table[int(stat.parent.name)] = (int(fields[1]), cmdline, int(fields[2]))
    return table


def _rss_kib(pid: int) -> int:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class MemorySampler(threading.Thread):
    """Samples RSS and PSS of each Airflow component's process tree (the component and its descendants).

    Only components in this Airflow's process group count: other Airflows may run on a shared machine.
    """

    def __init__(self, group: int, interval: float, pss_every: int = 4) -> None:
        super().__init__(daemon=True)
        self.group = group
        self.interval = interval
        # PSS (smaps_rollup) costs far more to read than RSS: only every pss_every-th sample.
        self.pss_every = pss_every
        self.samples: list[dict[str, Any]] = []
        self.cpu_s = 0.0  # CPU time this sampler spent (it shares the machine with what it measures)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        count = 0
        while not self._stop_event.is_set():
            started = time.time()
            cpu = time.thread_time()
            with contextlib.suppress(Exception):  # a process may vanish between two reads
                self.samples.append(self.sample(started, with_pss=count % self.pss_every == 0))
            self.cpu_s += time.thread_time() - cpu
            count += 1
            self._stop_event.wait(max(0.0, self.interval - (time.time() - started)))

    def alive(self, component: str) -> bool:
        """Whether this Airflow's component process is running."""
        return any(
            pgid == self.group and _is_component(cmd, component) for _, cmd, pgid in _proc_table().values()
        )

    def sample(self, now: float, with_pss: bool = True) -> dict[str, Any]:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        sample: dict[str, Any] = {"t": now}
        for component in COMPONENTS:
            # The component's process: its command line names it and its parent's does not (forked
            # children such as LocalExecutor workers may keep the parent's command line).
            roots = [
                pid
                for pid, (ppid, cmd, pgid) in table.items()
                if pgid == self.group
                and _is_component(cmd, component)
                and not _is_component(table.get(ppid, (0, "", 0))[1], component)
            ]
            tree: set[int] = set()
            todo = list(roots)
            while todo:
                pid = todo.pop()
                if pid not in tree:
                    tree.add(pid)
                    todo.extend(children.get(pid, []))
            kinds: dict[str, int] = {}
            for pid in tree:
                name = " ".join(table[pid][1].split()[1:3])[:60]
                kinds[name] = kinds.get(name, 0) + 1
            sample[component] = {
                "root_rss_mib": sum(_rss_kib(p) for p in roots) / 1024,
                "rss_mib": sum(_rss_kib(p) for p in tree) / 1024,
                "pss_mib": sum(_pss_kib(p) for p in tree) / 1024 if with_pss else None,
                "procs": len(tree),
                "kinds": kinds,
            }
        return sample

    def window(self, start: float, end: float) -> list[dict[str, Any]]:
        return [s for s in list(self.samples) if start <= s["t"] <= end]


def _is_component(cmdline: str, component: str) -> bool:
    """The component's own process: ``.../airflow <component> ...`` run by Python (not the bash wrapper)."""
    parts = cmdline.split()
    for i, part in enumerate(parts[:-1]):
        if part.endswith("/airflow") and parts[i + 1] == component:
            return "python" in os.path.basename(parts[0])
    return False


def peak(samples: list[dict[str, Any]], component: str, key: str) -> float | None:
    values = [s[component][key] for s in samples if component in s and s[component][key] is not None]
    return max(values) if values else None


# ---------------------------------------------------------------------------------------- timings


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# Task-log events (the task's and its trigger's log files) that mark the phases of one deferred fold.
_LOG_MARKS = {
    "spawned": re.compile(r"^Spawned Modal call"),
    "deferred": re.compile(r"^Pausing task as DEFERRED"),
    "trigger_started": re.compile(r"^trigger .* starting$"),
    "trigger_event": re.compile(r"^Trigger fired event"),
    "succeeded": re.compile(r"^Modal call \S+ succeeded"),
}


def task_log_marks(log_dir: Path) -> dict[str, float]:
    """First timestamp of each mark in one task instance's log files (JSON lines), the first line, and
    the first line of the resumed task (after the trigger fired)."""
    marks: dict[str, float] = {}
    lines: list[tuple[float, str]] = []
    for path in sorted(log_dir.glob("attempt=*.log*")):
        for raw in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            t = _ts(entry.get("timestamp"))
            if t is None:
                continue
            lines.append((t, str(entry.get("event", ""))))
    lines.sort()
    for t, event in lines:
        for name, pattern in _LOG_MARKS.items():
            if name not in marks and pattern.search(event):
                marks[name] = t
        if "trigger_event" in marks and "resumed" not in marks and event.startswith("::group::Pre Execute"):
            marks["resumed"] = t
    if lines:
        marks["first_line"] = lines[0][0]
        marks["last_line"] = lines[-1][0]
    return marks


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def spread(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(min, median, max) of a list, or Nones."""
    if not values:
        return None, None, None
    return min(values), statistics.median(values), max(values)


def analyse_run(
    airflow: LocalAirflow,
    plane: FakeModalControlPlane,
    run_id: str,
    k: int,
    fold_seconds: float,
    triggered_at: float,
    call_ids_before: set[str],
) -> dict[str, Any]:
    run = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
    tis = airflow.task_instances(DAG_ID, run_id)
    folds = sorted((t for t in tis if t["task_id"] == FOLD_TASK), key=lambda t: t["map_index"])
    others = {t["task_id"].split(".")[-1]: t for t in tis if t["task_id"] != FOLD_TASK}
    run_end = _ts(run.get("end_date"))
    starts = [_ts(t["start_date"]) for t in folds if t.get("start_date")]
    ends = [_ts(t["end_date"]) for t in folds if t.get("end_date")]

    # The control plane's view of the fold calls of this run (spawn and finish times).
    events = [e for e in plane.events() if e.get("call_id") not in call_ids_before]
    spawn_t = {e["call_id"]: e["t"] for e in events if e["type"] == "spawn" and e["function"] == "train_fold"}
    finish_t = {e["call_id"]: e["t"] for e in events if e["type"] == "finished" and e["call_id"] in spawn_t}

    # Per fold, from its task log: the phases of one deferred task.
    log_root = airflow.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={FOLD_TASK}"
    per_fold = []
    for ti in folds:
        marks = task_log_marks(log_root / f"map_index={ti['map_index']}")
        call_id = None
        with contextlib.suppress(Exception):
            call_id = airflow.xcom(DAG_ID, run_id, FOLD_TASK, key="modal_call_id", map_index=ti["map_index"])
        row = {
            "map_index": ti["map_index"],
            "state": ti["state"],
            "try_number": ti.get("try_number"),
            "queued": _ts(ti.get("queued_when")),  # a resumed deferred task: its re-queue
            "start": _ts(ti.get("start_date")),
            "end": _ts(ti.get("end_date")),
            "call_id": call_id,
            "spawn": spawn_t.get(call_id),
            "finish": finish_t.get(call_id),
            **{f"log_{name}": t for name, t in marks.items()},
        }
        per_fold.append(row)

    def diffs(a: str, b: str) -> list[float]:
        # Folds that needed an Airflow retry mix two tries' dates: left out here, listed in "retried_folds".
        return [
            r[b] - r[a]
            for r in per_fold
            if r.get("try_number") == 1 and r.get(a) is not None and r.get(b) is not None
        ]

    first_start = min(starts) if starts else None
    fold_phase = (max(ends) - first_start) if starts and ends else None
    spawns = [r["spawn"] for r in per_fold if r.get("spawn")]
    first_try_spawns = [r["spawn"] for r in per_fold if r.get("try_number") == 1 and r.get("spawn")]
    finishes = [r["finish"] for r in per_fold if r.get("finish")]
    trigger_events = [r["log_trigger_event"] for r in per_fold if r.get("log_trigger_event")]
    result: dict[str, Any] = {
        "k": k,
        "run_id": run_id,
        "state": run.get("state"),
        "folds_succeeded": sum(1 for t in folds if t["state"] == "success"),
        "retried_folds": [r["map_index"] for r in per_fold if (r.get("try_number") or 1) > 1],
        "calls_spawned": len(spawn_t),
        "run_wall_s": (run_end - triggered_at) if run_end else None,
        "fold_phase_s": fold_phase,
        "before_folds_s": (first_start - triggered_at) if first_start else None,
        "after_folds_s": (run_end - max(ends)) if run_end and ends else None,
        "fan_out": {
            # first fold start -> last fold start / last spawn: how long until every GPU call was out
            "last_start_after_first_s": (max(starts) - first_start) if starts else None,
            "last_spawn_after_first_start_s": (max(spawns) - first_start) if spawns and first_start else None,
            # the same over the folds' first tries only (a retried fold spawns or re-attaches later)
            "last_spawn_after_first_start_first_tries_s": (max(first_try_spawns) - first_start)
            if first_try_spawns and first_start
            else None,
            # last call finished -> last fold task ended
            "tail_after_last_finish_s": (max(ends) - max(finishes)) if ends and finishes else None,
            "first_trigger_event_after_last_finish_s": (
                (max(trigger_events) - max(finishes)) if trigger_events and finishes else None
            ),
        },
        "per_fold_phases_s": {
            # (min, median, max) over the folds, in the order they happen
            "start_to_spawn": spread(diffs("start", "spawn")),
            "deferred_to_trigger_started": spread(diffs("log_deferred", "log_trigger_started")),
            "spawn_to_finish": spread(diffs("spawn", "finish")),
            "finish_to_trigger_event": spread(diffs("finish", "log_trigger_event")),
            "trigger_event_to_requeued": spread(diffs("log_trigger_event", "queued")),
            "requeued_to_resumed": spread(diffs("queued", "log_resumed")),
            "resumed_to_end": spread(diffs("log_resumed", "end")),
            "finish_to_end": spread(diffs("finish", "end")),
            "start_to_end": spread(diffs("start", "end")),
        },
        "other_tasks": {
            name: {
                "queued_to_start_s": (_ts(t["start_date"]) - _ts(t["queued_when"]))
                if t.get("start_date") and t.get("queued_when")
                else None,
                "duration_s": t.get("duration"),
                "state": t["state"],
            }
            for name, t in others.items()
        },
        "folds": per_fold,
    }
    for key in ("run_wall_s", "fold_phase_s"):
        value = result[key]
        result[key.replace("_s", "_over_T")] = value / fold_seconds if value is not None else None
    return result


# ---------------------------------------------------------------------------------------- main


class PrivatePostgres:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust auth) for Airflow's metadata database."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.prefix, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.prefix:
            shutil.chown(self.folder, user="postgres")
        initdb, pg_ctl = (shutil.which(name) or name for name in ("initdb", "pg_ctl"))
        self._run(initdb, "-D", str(self.data), "--auth=trust", "-U", "airflow")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self._run(
            pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "postgres.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        psql = shutil.which("psql") or "psql"
        subprocess.run(
            [
                psql,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "airflow",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE airflow",
            ],
            check=True,
            capture_output=True,
        )
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"

    def stop(self) -> None:
        pg_ctl = shutil.which("pg_ctl") or "pg_ctl"
        with contextlib.suppress(Exception):
            self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")


def component_errors(airflow: LocalAirflow) -> list[str]:
    """The components' error and exit lines from the Airflow log (why a run got stuck)."""
    pattern = re.compile(
        r"Exited execute loop|Exited trigger loop|Exception when executing|OperationalError\)|"
        r"Shutting down LocalExecutor"
    )
    path = airflow.home / "airflow.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    found = [line[:240] for line in lines if pattern.search(line)]
    return found[-20:]


def wait_for_run(
    airflow: LocalAirflow, run_id: str, timeout: float, sampler: MemorySampler
) -> tuple[str, dict[str, Any]]:
    """Poll the run's state every 2 s until it ends; a slow or failing REST call is retried, not fatal.

    Also returns how the API server answered meanwhile (it also serves the task processes' execution API,
    so a fan-out slows it down): the slowest answer and the number of failed or timed-out calls.
    """
    deadline = time.monotonic() + timeout
    latencies: list[float] = []
    errors = 0
    state = "unknown"
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            response = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
            response.raise_for_status()
            state = response.json()["state"]
        except httpx.HTTPError:
            errors += 1
        latencies.append(time.monotonic() - started)
        if state in ("success", "failed"):
            break
        dead = [c for c in ("scheduler", "triggerer") if not sampler.alive(c)]
        if dead:  # a crashed component never comes back: the run would wait forever
            time.sleep(5.0)
            dead = [c for c in dead if not sampler.alive(c)]
            if dead:
                state = f"stuck: {' and '.join(dead)} exited"
                break
        time.sleep(2.0)
    else:
        raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s (last state {state})")
    return state, {
        "calls": len(latencies),
        "failed_calls": errors,
        "max_latency_s": max(latencies) if latencies else None,
        "median_latency_s": med(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    work = args.work_dir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    modal_storage, local_storage = work / "modal-volume", work / "storage"
    for folder in (modal_storage, local_storage):
        folder.mkdir()

    pythonpath = [
        str(BENCH),
        str(REPO / "include"),
        *filter(None, os.environ.get("PYTHONPATH", "").split(":")),
    ]
    plane = FakeModalControlPlane(
        {
            "lerobot-kfold/prepare_dataset": "fanout_functions:prepare_dataset",
            "lerobot-kfold/train_fold": "fanout_functions:train_fold",
            "lerobot-kfold/aggregate": "lerobot_kfold.modal_app:aggregate",
        },
        work / "plane",
        env={
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "LEROBOT_KFOLD_STORAGE": str(modal_storage),
            "FANOUT_FOLD_SECONDS": str(args.fold_seconds),
            "FANOUT_EPISODES": str(args.episodes),
            "MPLCONFIGDIR": str(REPO / ".cache" / "matplotlib"),
            "HF_HUB_OFFLINE": "1",
        },
    )
    airflow_env = {
        "LEROBOT_KFOLD_STORAGE": str(local_storage),
        "LEROBOT_KFOLD_POLL_INTERVAL_S": str(args.poll_interval),
        "LEROBOT_KFOLD_MAX_PARALLEL_FOLDS": str(max(args.ks)),
        "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(args.parallelism, *args.ks)),
        "HF_HUB_OFFLINE": "1",
        "MPLCONFIGDIR": str(REPO / ".cache" / "matplotlib"),
    }
    settings = {
        "ks": args.ks,
        "fold_seconds": args.fold_seconds,
        "airflow_env": dict(airflow_env),
        "conf_extra": None,
    }
    runs: list[dict[str, Any]] = []
    info_before = machine_info()
    progress(f"load before: {info_before['load_avg']}; starting the fake Modal control plane")
    plane.start()
    plane_client_env = plane.client_env()
    connection = {
        "conn_type": "modal",
        "login": plane_client_env["MODAL_TOKEN_ID"],
        "password": plane_client_env["MODAL_TOKEN_SECRET"],
    }
    airflow_env["MODAL_SERVER_URL"] = plane.url
    airflow_env["AIRFLOW_CONN_MODAL_DEFAULT"] = json.dumps(connection)
    postgres = None
    if args.postgres:
        postgres = PrivatePostgres(work / "pg")
        progress("starting a private PostgreSQL for Airflow's metadata database")
        airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = postgres.start()
        airflow_env["PYTHONPATH"] = os.pathsep.join(
            [
                str(args.driver_path.resolve()),
                *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
            ]
        )
    settings["metadata_db"] = "postgresql" if postgres else "sqlite"
    airflow = LocalAirflow(work / "airflow", env=airflow_env)
    sampler = None
    failures = 0
    try:
        progress("starting Airflow (db migrate, API server, scheduler, DAG processor, triggerer)")
        t0 = time.time()
        airflow.start()
        airflow.wait_for_dag(DAG_ID)
        progress(f"Airflow up in {time.time() - t0:.0f}s at {airflow.url}")
        assert airflow.process is not None
        sampler = MemorySampler(airflow.process.pid, args.sample_interval)
        sampler.start()
        for k in args.ks:
            conf = {
                "k": k,
                "backend": "modal",
                "gpu": "H100",
                "steps": 1000,
                "eval_every": 500,
                "save_every": 500,
                "batch_size": 64,
                "dataset_root": "datasets/fanout_synthetic",
            }
            settings["conf_extra"] = {key: v for key, v in conf.items() if key != "k"}
            time.sleep(args.settle)
            idle_start = time.time() - args.settle
            run_id = f"fanout_k{k}_{int(time.time())}"
            call_ids_before = {e["call_id"] for e in plane.events() if "call_id" in e}
            load = os.getloadavg()
            progress(f"k={k}: triggering {run_id} (T={args.fold_seconds:g}s, load {load[0]:.2f})")
            triggered_at = time.time()
            response = airflow.api(
                "POST",
                f"/dags/{DAG_ID}/dagRuns",
                json={"dag_run_id": run_id, "logical_date": None, "conf": conf},
            )
            response.raise_for_status()
            state, rest = wait_for_run(airflow, run_id, timeout=args.fold_seconds + 1200, sampler=sampler)
            done_at = time.time()
            time.sleep(2 * args.sample_interval)
            result = analyse_run(airflow, plane, run_id, k, args.fold_seconds, triggered_at, call_ids_before)
            window = sampler.window(triggered_at, done_at)
            idle = sampler.window(idle_start, triggered_at)
            result["memory"] = {
                component: {
                    "idle_rss_mib": med([s[component]["rss_mib"] for s in idle]),
                    "idle_pss_mib": med([s[component]["pss_mib"] for s in idle if s[component]["pss_mib"]]),
                    "peak_rss_mib": peak(window, component, "rss_mib"),
                    "peak_pss_mib": peak(window, component, "pss_mib"),
                    "peak_root_rss_mib": peak(window, component, "root_rss_mib"),
                    "peak_procs": peak(window, component, "procs"),
                    # command lines (first two words) in the tree at its RSS peak, with their counts
                    "kinds_at_peak": max(window, key=lambda s, c=component: s[c]["rss_mib"])[component][
                        "kinds"
                    ]
                    if window
                    else None,
                }
                for component in COMPONENTS
            }
            result["rest_api_while_running"] = rest
            result["samples"] = len(window)
            result["load_avg_before"] = [round(x, 2) for x in load]
            result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
            runs.append(result)
            result["state"] = state if state.startswith("stuck") else result["state"]
            result["sampler_cpu_s"] = round(sampler.cpu_s, 1)
            if state != "success" or result["folds_succeeded"] != k:
                failures += 1
                progress(f"k={k}: run {state}, {result['folds_succeeded']}/{k} folds succeeded")
                result["log_errors"] = component_errors(airflow)
                for line in result["log_errors"][-5:]:
                    progress(f"  {line}")
                if state.startswith("stuck"):
                    if args.json:
                        write_json(args.json, payload(args, settings, info_before, runs), quiet=True)
                    break
            progress(
                f"k={k}: {state}; run wall {fmt_s(result['run_wall_s'])} "
                f"({fmt_x(result['run_wall_over_T'])} T), fold phase {fmt_s(result['fold_phase_s'])} "
                f"({fmt_x(result['fold_phase_over_T'])} T); scheduler peak RSS "
                f"{fmt_s(result['memory']['scheduler']['peak_rss_mib'], 'MiB')}, triggerer "
                f"{fmt_s(result['memory']['triggerer']['peak_rss_mib'], 'MiB')}"
            )
            if args.json:
                write_json(args.json, payload(args, settings, info_before, runs), quiet=True)
    finally:
        if sampler is not None:
            sampler.stop()
        progress("stopping Airflow and the control plane")
        airflow.stop()
        plane.stop()
        if postgres is not None:
            postgres.stop()
    info_after = machine_info()
    report(args, runs, info_before, info_after)
    if args.json:
        data = payload(args, settings, info_before, runs)
        data["machine_after"] = info_after
        write_json(args.json, data)
    return 1 if failures else 0


def payload(args, settings, info, runs) -> dict[str, Any]:
    return {
        "benchmark": "fanout",
        "argv": sys.argv,
        "settings": settings,
        "machine": info,
        "runs": runs,
    }


def fmt_s(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.1f} {unit}" if unit != "s" else f"{value:.1f}s"


def fmt_x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _r(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _trio(values: tuple[float | None, float | None, float | None]) -> str:
    lo, mid, hi = values
    return "-" if mid is None else f"{mid:.1f} ({lo:.1f}-{hi:.1f})"


def report(args, runs, info_before, info_after) -> None:
    t = args.fold_seconds
    print(
        f"\nFan-out, T = {t:g} s per fold call, poll interval {args.poll_interval:g} s, "
        f"parallelism {args.parallelism}, metadata database {'PostgreSQL' if args.postgres else 'SQLite'}; "
        "one run per k"
    )
    header = [
        "k",
        "state",
        "run wall s",
        "run wall / T",
        "fold phase s",
        "fold phase / T",
        "before folds s",
        "after folds s",
        "scheduler peak RSS MiB (PSS)",
        "triggerer peak RSS MiB (PSS)",
        "scheduler procs",
    ]
    rows = []
    for r in runs:
        mem = r["memory"]
        rows.append(
            [
                str(r["k"]),
                f"{r['state']} {r['folds_succeeded']}/{r['k']}",
                _r(r["run_wall_s"]),
                _r(r["run_wall_over_T"], 2),
                _r(r["fold_phase_s"]),
                _r(r["fold_phase_over_T"], 2),
                _r(r["before_folds_s"]),
                _r(r["after_folds_s"]),
                f"{_r(mem['scheduler']['peak_rss_mib'], 0)} ({_r(mem['scheduler']['peak_pss_mib'], 0)})",
                f"{_r(mem['triggerer']['peak_rss_mib'], 0)} ({_r(mem['triggerer']['peak_pss_mib'], 0)})",
                _r(mem["scheduler"]["peak_procs"], 0),
            ]
        )
    print(markdown_table(header, rows))
    print("\nWhere the fold phase goes (per fold, first tries only: median (min-max) s):")
    header = [
        "k",
        "last fold start after first",
        "last spawn after first start (first tries)",
        "start -> spawn",
        "deferred -> trigger runs",
        "spawn -> finish",
        "finish -> trigger event",
        "event -> re-queued",
        "re-queued -> resumed",
        "resumed -> end",
        "last finish -> last end",
    ]
    rows = []
    for r in runs:
        fo, ph = r["fan_out"], r["per_fold_phases_s"]
        rows.append(
            [
                str(r["k"]),
                _r(fo["last_start_after_first_s"]),
                f"{_r(fo['last_spawn_after_first_start_s'])} "
                f"({_r(fo.get('last_spawn_after_first_start_first_tries_s'))})",
                _trio(ph["start_to_spawn"]),
                _trio(ph["deferred_to_trigger_started"]),
                _trio(ph["spawn_to_finish"]),
                _trio(ph["finish_to_trigger_event"]),
                _trio(ph["trigger_event_to_requeued"]),
                _trio(ph["requeued_to_resumed"]),
                _trio(ph["resumed_to_end"]),
                _r(fo["tail_after_last_finish_s"]),
            ]
        )
    print(markdown_table(header, rows))
    print("\nFolds that needed an Airflow retry (left out of the per-fold phases):")
    for r in runs:
        print(f"  k={r['k']}: retried {r.get('retried_folds')}, {r.get('calls_spawned')} fold calls spawned")
    print("\nREST API (GET the run every 2 s) while each run ran:")
    for r in runs:
        rest = r.get("rest_api_while_running") or {}
        print(
            f"  k={r['k']}: {rest.get('calls')} calls, {rest.get('failed_calls')} failed or timed out, "
            f"median {_r(rest.get('median_latency_s'), 2)} s, slowest {_r(rest.get('max_latency_s'), 1)} s"
        )
    print("\nOther tasks (queued -> start, duration) s:")
    for r in runs:
        parts = [
            f"{name} {_r(v['queued_to_start_s'])} + {_r(v['duration_s'])}"
            for name, v in r["other_tasks"].items()
        ]
        print(f"  k={r['k']}: " + "; ".join(parts))
    print(
        f"\nmachine: {info_before.get('nproc')} CPUs, {info_before.get('cpu')}; load before "
        f"{info_before.get('load_avg')}, after {info_after.get('load_avg')}"
    )


if __name__ == "__main__":
    sys.exit(main())
