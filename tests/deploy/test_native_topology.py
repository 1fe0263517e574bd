"""The native run of the compose topology (``scripts/airflow_celery.py``) takes its settings from
``docker-compose.yaml`` and cannot drift from it.

What is checked, without starting anything: ``scripts/compose_config.py`` reads the compose file the way
the real Compose binary resolves it; every setting of ``x-airflow-common`` reaches the native
components, unchanged or with only its host or container path translated, unless it is one of the
named ``NOT_NATIVE`` settings; the native components are the compose services' own commands; and every
native listener is on 127.0.0.1. The topology itself runs in ``tests/e2e_celery``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from scripts import compose_config
from scripts.airflow_celery import CeleryAirflow
from tests.deploy.test_compose import AIRFLOW_COMPONENTS, resolved_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_config.load()


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> CeleryAirflow:
    """A launcher that is never started: its settings and commands are plain data."""
    return CeleryAirflow(tmp_path_factory.mktemp("native") / "home", port=18080)


class TestReadingTheComposeFile:
    def test_matches_what_the_compose_binary_resolves(self, tmp_path: Path, compose: dict[str, Any]) -> None:
        # The same (empty) environment on both sides: compose_config reads what Compose itself would.
        resolved = resolved_config(tmp_path)["services"]["airflow-scheduler"]["environment"]

        ours = compose_config.airflow_environment(compose, env={})

        assert ours == {name: resolved[name] for name in ours}

    @pytest.mark.parametrize(
        ("value", "env", "expected"),
        [
            pytest.param("${A:-x}", {}, "x", id="default-when-unset"),
            pytest.param("${A:-x}", {"A": ""}, "x", id="default-when-empty"),
            pytest.param("${A-x}", {"A": ""}, "", id="dash-keeps-empty"),
            pytest.param("${A}/b", {"A": "a"}, "a/b", id="plain"),
            pytest.param("$${HOSTNAME}", {}, "${HOSTNAME}", id="escaped-dollar"),
        ],
    )
    def test_interpolation_follows_compose(self, value: str, env: dict[str, str], expected: str) -> None:
        assert compose_config.interpolate(value, env) == expected

    def test_the_components_are_the_default_airflow_services(self, compose: dict[str, Any]) -> None:
        assert set(compose_config.airflow_commands(compose)) == set(AIRFLOW_COMPONENTS)


class TestNativeSettings:
    def test_every_compose_setting_reaches_the_components(
        self, native: CeleryAirflow, compose: dict[str, Any]
    ) -> None:
        settings = native.settings()
        common = compose["x-airflow-common"]["environment"]

        missing = [name for name in common if name not in settings and name not in compose_config.NOT_NATIVE]

        assert not missing, f"x-airflow-common settings that the native run drops: {missing}"
        assert set(compose_config.NOT_NATIVE) <= set(common), "a NOT_NATIVE setting is gone from compose"

    def test_only_hosts_and_container_paths_are_translated(
        self, native: CeleryAirflow, compose: dict[str, Any]
    ) -> None:
        settings = native.settings()
        changed = {
            name: (value, settings[name])
            for name, value in compose_config.airflow_environment(compose, env={}).items()
            if name in settings and settings[name] != value and name not in compose_config.NOT_NATIVE
        }

        for name, (theirs, ours) in changed.items():
            if "://" in theirs:  # same scheme, login and database; only the address differs
                a, b = urlsplit(theirs), urlsplit(ours)
                assert (a.scheme, a.username, a.password, a.path) == (
                    b.scheme,
                    b.username,
                    b.password,
                    b.path,
                )
                assert b.hostname == "127.0.0.1", name
            else:
                assert theirs.startswith("/opt/airflow/"), f"{name} changed: {theirs!r} -> {ours!r}"
                assert not ours.startswith("/opt/airflow/"), name

    def test_the_executor_and_backends_are_the_compose_ones(self, native: CeleryAirflow) -> None:
        settings = native.settings()

        assert settings["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
        assert settings["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:@{native.redis.address}/0"
        assert settings["PYTHONPATH"].split(":")[0] == str(REPO / "include")

    def test_every_listener_is_on_localhost(self, native: CeleryAirflow) -> None:
        settings = native.settings()

        assert settings["AIRFLOW__API__HOST"] == "127.0.0.1"
        assert settings["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
        assert settings["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
        for name, argv in native.component_commands().items():
            if argv[0] in ("scheduler", "triggerer", "celery"):
                assert "--skip-serve-logs" in argv, f"{name} would open a log server"

    def test_the_database_login_is_the_compose_one(
        self, native: CeleryAirflow, compose: dict[str, Any]
    ) -> None:
        login = compose_config.postgres_login(compose)

        assert (native.postgres.user, native.postgres.password, native.postgres.database) == (
            login["user"],
            login["password"],
            login["database"],
        )


class TestNativeComponents:
    def test_each_service_runs_its_compose_command_and_the_worker_twice(
        self, native: CeleryAirflow, compose: dict[str, Any]
    ) -> None:
        commands = native.component_commands()
        flags = {"--skip-serve-logs", "--celery-hostname", "worker1@%h", "worker2@%h"}

        assert set(commands) == {
            "apiserver",
            "scheduler",
            "dag-processor",
            "triggerer",
            "worker-1",
            "worker-2",
        }
        for service, command in compose_config.airflow_commands(compose).items():
            names = (
                ["worker-1", "worker-2"]
                if service == "airflow-worker"
                else [service.removeprefix("airflow-")]
            )
            for name in names:
                assert [a for a in commands[name] if a not in flags] == command.split()
