"""A local Airflow in one command: API server + UI, scheduler, DAG processor and triggerer on SQLite.

The same components ``airflow standalone`` runs (LocalExecutor), started directly so that every
listener binds 127.0.0.1 only: the scheduler and triggerer run with ``--skip-serve-logs`` (the API server
reads task logs from the local log folder). They run in one process group, stopped together on Ctrl-C;
each component is its own process in it, so a test can kill or restart one (``kill``, ``restart``).

    python scripts/airflow_local.py [--port 8080] [--home .cache/airflow]

Tests and benchmarks use ``LocalAirflow`` to start a private instance and drive it through the REST API.
SQLite suits a handful of folds at once: with 64 fold tasks starting together the database locked and the
scheduler and triggerer exited (docs/benchmarks.md, item 4). The deployment of ``docker-compose.yaml``
(CeleryExecutor, PostgreSQL, Redis) runs natively through ``scripts/airflow_celery.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/airflow_local.py`
    sys.path.insert(0, str(REPO))

from scripts import process_groups  # noqa: E402
from scripts.process_groups import free_port  # noqa: E402

USER = "admin"
TERMINAL_RUN_STATES = {"success", "failed"}
__all__ = ["REPO", "USER", "LocalAirflow", "free_port"]


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
        # The group's leader: a process that only waits, so the group outlives any one component.
        self.process: subprocess.Popen | None = None
        self.components: dict[str, subprocess.Popen] = {}
        self._env: dict[str, str] = {}
        self._token: str | None = None

    # ------------------------------------------------------------------ settings

    def settings(self) -> dict[str, str]:
        """Airflow's settings for this instance (the environment's AIRFLOW__... variables and friends)."""
        return {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(not self.unpause_all),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
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

    def component_commands(self) -> dict[str, list[str]]:
        """Name -> arguments of ``airflow`` for each long-running component."""
        return {
            "api-server": ["api-server"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }

    def environment(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "PATH": path, **self.settings(), **self.extra_env}

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 180.0) -> LocalAirflow:
        self.home.mkdir(parents=True, exist_ok=True)
        self._env = self.environment()
        subprocess.run(
            [self._airflow(), "db", "migrate"], env=self._env, check=True, capture_output=True, timeout=300
        )
        self.process = process_groups.start(["sleep", "infinity"], env=self._env, log=self.log_file)
        for name in self.component_commands():
            self.start_component(name)
        self._wait(self._healthy, timeout, "Airflow to become healthy")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every component: SIGTERM to the process group, SIGKILL after ``timeout``."""
        if self.process is None:
            return
        process_groups.stop_group(self.process.pid, timeout=timeout)
        for process in (self.process, *self.components.values()):
            process.wait(timeout=10)
        self.process = None
        self.components = {}

    def start_component(self, name: str) -> subprocess.Popen:
        """Start one component (again) in this Airflow's process group."""
        if self.process is None:
            raise RuntimeError("start() this Airflow first")
        argv = [self._airflow(), *self.component_commands()[name]]
        process = process_groups.start(argv, env=self._env, log=self.log_file, join=self.process.pid)
        self.components[name] = process
        return process

    def kill_component(self, name: str, sig: int = signal.SIGKILL, timeout: float = 30.0) -> list[int]:
        """Signal one component and its children; SIGKILL what is left after ``timeout``. Returns the pids."""
        process = self.components[name]
        tree = process_groups.descendants(process.pid)
        for pid in tree if sig == signal.SIGKILL else [process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
        for pid in tree:  # children a graceful stop left behind (they would be orphaned otherwise)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)
        return tree

    def restart_component(self, name: str, sig: int = signal.SIGTERM) -> subprocess.Popen:
        """Stop one component (``sig``: SIGTERM is a graceful stop, SIGKILL a crash), then start it again."""
        self.kill_component(name, sig)
        return self.start_component(name)

    def restart_exited(self) -> list[str]:
        """Start again every component that exited (compose's ``restart: always``); returns their names."""
        exited = [name for name, process in self.components.items() if process.poll() is not None]
        for name in exited:
            self.start_component(name)
        return exited

    def __enter__(self) -> LocalAirflow:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log_file(self) -> Path:
        return self.home / "airflow.log"

    def log_tail(self, lines: int = 60) -> str:
        path = self.log_file
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

    def wait_for_runs(self, dag_id: str, run_ids: dict[str, str], timeout: float = 600.0) -> dict[str, str]:
        """Wait for several runs at once: ``{name: run_id}`` -> ``{name: final state}``."""
        states: dict[str, str] = {}

        def finished() -> bool:
            for name, run_id in run_ids.items():
                if states.get(name) not in TERMINAL_RUN_STATES:
                    states[name] = self.run_state(dag_id, run_id)
            return all(state in TERMINAL_RUN_STATES for state in states.values())

        self._wait(finished, timeout, f"runs {sorted(run_ids.values())} of {dag_id} to finish")
        return states

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

    def _airflow(self) -> str:
        env = self._env or self.environment()
        return shutil.which("airflow", path=env["PATH"]) or "airflow"

    def _healthy(self) -> bool:
        exited = [name for name, process in self.components.items() if process.poll() is not None]
        if exited:
            raise RuntimeError(f"Airflow's {', '.join(exited)} exited early:\n{self.log_tail()}")
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


def serve(airflow: LocalAirflow, banner: str) -> int:
    """Start ``airflow``, print ``banner`` (formatted with ``url``, ``user`` and ``password``) and keep it
    running until Ctrl-C or until a component exits; then stop everything."""
    print(f"starting Airflow in {airflow.home} (log: {airflow.log_file}) ...", flush=True)
    airflow.start()
    print(banner.format(url=airflow.url, user=USER, password=airflow.password), flush=True)
    try:
        while all(process.poll() is None for process in airflow.components.values()):
            time.sleep(1)
        print("An Airflow component stopped by itself; see the log.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping Airflow ...", flush=True)
        return 0
    finally:
        airflow.stop()


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
    return serve(airflow, "\nAirflow UI and API: {url}\nlogin: {user} / {password}\nCtrl-C stops it.")


if __name__ == "__main__":
    sys.exit(main())
