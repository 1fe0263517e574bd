"""The deployment of ``docker-compose.yaml``, run natively on 127.0.0.1: no Docker engine needed.

PostgreSQL and Redis from Debian's packages (``scripts/native_services.py``), then Airflow with the
CeleryExecutor: API server, scheduler, DAG processor, triggerer and two Celery workers, each
``airflow <command>`` of the compose file's services. The settings are the compose file's own
(``x-airflow-common``, read by ``scripts/compose_config.py``) with hostnames and container paths
translated, so the native topology and the compose file cannot drift; a few host-only settings are added
here (``HOST_SETTINGS``). Airflow's components share one process group, each database server has its
own; data lives in temporary folders that ``stop()`` removes.

    python scripts/airflow_celery.py [--port 8080] [--home .cache/airflow-celery] [--workers 2]

Tests, fault scripts and ``bench/fanout.py --launcher scripts.airflow_celery:CeleryAirflow`` use
``CeleryAirflow`` as they use ``LocalAirflow``; ``kill_component``/``restart_component`` and
``postgres.restart()`` inject the faults.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/airflow_celery.py`
    sys.path.insert(0, str(REPO))

from scripts import compose_config, process_groups  # noqa: E402
from scripts.airflow_local import LocalAirflow, serve  # noqa: E402
from scripts.native_services import NativePostgres, NativeRedis  # noqa: E402
from scripts.process_groups import free_port  # noqa: E402

WORKER_SERVICE = "airflow-worker"


class CeleryAirflow(LocalAirflow):
    """The compose topology on this host: CeleryExecutor, PostgreSQL, Redis, ``workers`` Celery workers.

    Takes ``LocalAirflow``'s arguments (``home``, ``port``, ``env``) and:

    :param workers: Celery workers to run (the compose file's ``airflow-worker``, scaled).
    :param storage: host folder for ``/opt/airflow/storage`` (datasets and run outputs); default
        ``home/storage``. ``env`` (as for ``LocalAirflow``) is applied last and wins. New DAGs start
        paused, as the compose file says (``unpause_all`` does not apply).
    """

    def __init__(self, *args: Any, workers: int = 2, storage: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compose = compose_config.load()
        self.workers = workers
        self.storage = Path(storage or self.home / "storage").resolve()
        login = compose_config.postgres_login(self.compose)
        self.postgres = NativePostgres(login["user"], login["password"], login["database"])
        self.redis = NativeRedis()
        self.scheduler_health_port = free_port()

    # ------------------------------------------------------------------ settings

    def settings(self) -> dict[str, str]:
        """LocalAirflow's settings, overridden by the compose file's (translated), then the host's own."""
        api = f"127.0.0.1:{self.port}"
        hosts = {"postgres": self.postgres.address, "redis:6379": self.redis.address}
        hosts[f"{compose_config.AIRFLOW_IMAGE_SERVICE}:8080"] = api
        paths = {
            "/opt/airflow/storage": self.storage,
            "/opt/airflow/logs": self.home / "logs",
            "/opt/airflow/config": self.home,
        }
        compose = compose_config.native_environment(self.compose, os.environ, hosts, paths)
        # The library from this checkout first, then what the caller's environment had (a venv overlay).
        inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        compose["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([compose["PYTHONPATH"], *inherited]))
        return {**super().settings(), **compose, **self.host_settings()}

    def host_settings(self) -> dict[str, str]:
        """What a host needs that separate containers do not: listeners on 127.0.0.1 only, on free ports
        (the scheduler's health check binds 0.0.0.0:8974 by default; two workers cannot share a port)."""
        return {
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.scheduler_health_port),
        }

    def component_commands(self) -> dict[str, list[str]]:
        """The compose file's Airflow services, one component each, the worker ``workers`` times.

        ``--skip-serve-logs``: the API server reads task logs from the shared local log folder, so no
        component opens a log server (each would want the same port).
        """
        commands = {}
        for service, command in compose_config.airflow_commands(self.compose).items():
            argv = command.split()
            if argv[0] in ("scheduler", "triggerer") or argv[:2] == ["celery", "worker"]:
                argv.append("--skip-serve-logs")
            name = service.removeprefix("airflow-")
            if service != WORKER_SERVICE:
                commands[name] = argv
                continue
            for i in range(1, self.workers + 1):
                commands[f"worker-{i}"] = [*argv, "--celery-hostname", f"worker{i}@%h"]
        return commands

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 240.0) -> CeleryAirflow:
        self.storage.mkdir(parents=True, exist_ok=True)
        self.postgres.start()
        self.redis.start()
        try:
            super().start(timeout)
        except BaseException:
            self.stop()
            raise
        self._wait(self._workers_ready, 120, "the Celery workers")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        try:
            super().stop(timeout)
        finally:
            self.redis.stop()
            self.postgres.stop()

    def component_of(self, pid: int) -> str | None:
        """The component whose process tree holds ``pid`` (e.g. the worker running a task instance)."""
        for name, process in self.components.items():
            if pid in process_groups.descendants(process.pid):
                return name
        return None

    def _workers_ready(self) -> bool:
        """Every worker logged Celery's ``worker<i>@<host> ready.`` line (they share the Airflow log)."""
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        ready = set(re.findall(r"\bworker(\d+)@\S+ ready\.", text))
        return ready >= {str(i) for i in range(1, self.workers + 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--home", type=Path, default=REPO / ".cache" / "airflow-celery")
    parser.add_argument("--workers", type=int, default=2)
    storage = Path(os.environ.get("LEROBOT_KFOLD_STORAGE", REPO / "storage"))
    parser.add_argument("--storage", type=Path, default=storage, help="datasets and run outputs")
    args = parser.parse_args(argv)
    airflow = CeleryAirflow(
        args.home, args.port, unpause_all=True, workers=args.workers, storage=args.storage
    )
    banner = (
        f"\nAirflow UI and API: {{url}} (CeleryExecutor, {args.workers} Celery workers; PostgreSQL and "
        "Redis on free ports of 127.0.0.1)\nlogin: {user} / {password}\nCtrl-C stops it all."
    )
    return serve(airflow, banner)


if __name__ == "__main__":
    sys.exit(main())
