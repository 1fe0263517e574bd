"""A local Airflow in one command: API server + UI, scheduler, DAG processor and triggerer on SQLite.

The same components ``airflow standalone`` runs (LocalExecutor), started directly so that every
listener binds 127.0.0.1 only: the scheduler and triggerer run with ``--skip-serve-logs`` (the API server
reads task logs from the local log folder). They run in one process group, stopped together on Ctrl-C.

    python scripts/airflow_local.py [--port 8080] [--home .cache/airflow]

Tests and benchmarks use ``LocalAirflow`` to start a private instance and drive it through the REST API.
SQLite suits a handful of folds at once: with 64 fold tasks starting together the database locked and the
scheduler and triggerer exited (docs/benchmarks.md, item 4); point ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``
at PostgreSQL for that.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
USER = "admin"
COMPONENTS = (
    "api-server",
    "scheduler --skip-serve-logs",
    "dag-processor",
    "triggerer --skip-serve-logs",
)
TERMINAL_RUN_STATES = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalAirflow:
    """A private Airflow (SQLite, LocalExecutor) on 127.0.0.1 with this project's DAGs and plugins."""

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        unpause_all: bool = False,
    ) -> None:
        self.home = Path(home).resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = dict(env or {})
        self.unpause_all = unpause_all
        self.process: subprocess.Popen | None = None
        self._token: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def environment(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(not self.unpause_all),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 180.0) -> LocalAirflow:
        self.home.mkdir(parents=True, exist_ok=True)
        env = self.environment()
        airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
        script = "; ".join(f"exec_{i}() {{ '{airflow}' {c}; }}" for i, c in enumerate(COMPONENTS))
        script += "; " + " & ".join(f"exec_{i}" for i in range(len(COMPONENTS))) + " & wait"
        log = open(self.home / "airflow.log", "ab")  # noqa: SIM115 - held open by the child
        self.process = subprocess.Popen(
            ["bash", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._wait(self._healthy, timeout, "Airflow to become healthy")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every component: SIGTERM to the process group, SIGKILL after ``timeout``."""
        if self.process is None:
            return
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _group_members(group) and time.monotonic() < deadline:
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # stragglers of the group
        self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> LocalAirflow:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 60) -> str:
        path = self.home / "airflow.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # ------------------------------------------------------------------ REST API

    @property
    def password(self) -> str:
        generated = self.home / "simple_auth_manager_passwords.json.generated"
        return json.loads(generated.read_text())[USER]

    def token(self) -> str:
        if self._token is None:
            response = httpx.post(
                f"{self.url}/auth/token", json={"username": USER, "password": self.password}
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0, unpause: bool = True) -> None:
        self._wait(lambda: self.api("GET", f"/dags/{dag_id}").status_code == 200, timeout, f"DAG {dag_id}")
        if unpause:
            self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> httpx.Response:
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})

    def run_state(self, dag_id: str, run_id: str) -> str:
        response = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        return response.json()["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600.0) -> str:
        states: list[str] = []

        def finished() -> bool:
            states.append(self.run_state(dag_id, run_id))
            return states[-1] in TERMINAL_RUN_STATES

        self._wait(finished, timeout, f"run {run_id} of {dag_id} to finish")
        return states[-1]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        response = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        response.raise_for_status()
        return response.json()["task_instances"]

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        response = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index, "deserialize": True},
        )
        response.raise_for_status()
        return response.json()["value"]

    # ------------------------------------------------------------------ helpers

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Airflow exited early:\n{self.log_tail()}")
        try:
            health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(1.0)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.log_tail()}")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--home", type=Path, default=Path(os.environ.get("AIRFLOW_HOME", REPO / ".cache/airflow"))
    )
    args = parser.parse_args(argv)
    airflow = LocalAirflow(args.home, args.port, unpause_all=True)
    print(f"starting Airflow in {airflow.home} (log: {airflow.home / 'airflow.log'}) ...", flush=True)
    airflow.start()
    print(
        f"\nAirflow UI and API: {airflow.url}\nlogin: {USER} / {airflow.password}\nCtrl-C stops it.",
        flush=True,
    )
    try:
        while airflow.process is not None and airflow.process.poll() is None:
            time.sleep(1)
        print("Airflow stopped by itself; see the log.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping Airflow ...", flush=True)
        return 0
    finally:
        airflow.stop()


if __name__ == "__main__":
    sys.exit(main())
