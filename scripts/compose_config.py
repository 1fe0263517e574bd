"""The settings of ``docker-compose.yaml``, read for a native run of the same topology.

``docker-compose.yaml`` is the one source: ``scripts/airflow_celery.py`` starts its Airflow services
natively from the environment of ``x-airflow-common`` and the services' commands, so the two cannot
drift. Only what a container has and a host does not is translated, each by a rule that says why:

- service hostnames in URLs (``postgres``, ``redis:6379``, ``airflow-apiserver:8080``) become
  127.0.0.1 and the port the native server got (``rewrite_hosts``);
- container paths (``/opt/airflow/...``) become the host folders their volumes mount
  (``rewrite_paths``), with the storage, logs and config of this run where the caller says so;
- ``NOT_NATIVE``: the few settings that cannot apply outside the image, with the reason.

``${VAR:-default}`` is resolved from the caller's environment as Compose resolves it from the shell.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
AIRFLOW_IMAGE_SERVICE = "airflow-apiserver"  # any service built on x-airflow-common
# Settings of x-airflow-common that a native run replaces, and why.
NOT_NATIVE = {
    # The FAB auth manager needs apache-airflow-providers-fab (in the official image, not in
    # requirements.txt); natively the simple auth manager logs in as LocalAirflow does.
    "AIRFLOW__CORE__AUTH_MANAGER": "the image's FAB provider is not installed natively",
    # /opt/airflow/config/airflow.cfg is created by airflow-init in the image; natively the run's home.
    "AIRFLOW_CONFIG": "airflow.cfg lives in the native run's AIRFLOW_HOME",
}
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def load(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as data (YAML anchors and ``<<`` merges resolved)."""
    return yaml.safe_load(path.read_text())


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``${VAR}``, ``${VAR:-default}`` (default when unset or empty),
    ``${VAR-default}`` (default when unset) and ``$$`` (a literal ``$``)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, default = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        if operator == ":-" and not current:
            return default
        if operator == "-" and current is None:
            return default
        return current or ""

    return _VARIABLE.sub(one, value)


def airflow_environment(compose: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """``x-airflow-common``'s environment, interpolated, as strings."""
    common = compose["x-airflow-common"]["environment"]
    return {name: interpolate(str(value), env) for name, value in common.items()}


def airflow_commands(compose: dict[str, Any]) -> dict[str, str]:
    """Service -> ``airflow`` command of each long-running Airflow service that runs by default.

    An Airflow service is one built from the Airflow image; airflow-init (a one-off set-up with its own
    entrypoint) and services behind a profile (airflow-cli, flower) are not part of the topology.
    """
    image = compose["services"][AIRFLOW_IMAGE_SERVICE]["image"]
    commands = {}
    for name, service in compose["services"].items():
        if service.get("image") != image or service.get("profiles") or "entrypoint" in service:
            continue
        command = service.get("command")
        commands[name] = command if isinstance(command, str) else " ".join(command)
    return commands


def postgres_login(compose: dict[str, Any]) -> dict[str, str]:
    """User, password and database of the compose file's PostgreSQL service."""
    env = compose["services"]["postgres"]["environment"]
    return {
        "user": env["POSTGRES_USER"],
        "password": env["POSTGRES_PASSWORD"],
        "database": env["POSTGRES_DB"],
    }


def rewrite_hosts(value: str, hosts: Mapping[str, str]) -> str:
    """A URL whose host is a compose service (``hosts``: service or ``service:port`` -> ``host:port``)
    gets the native address; scheme, login, database and path are kept. Anything else is unchanged."""
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc:
        return value
    login, _, address = parts.netloc.rpartition("@")
    host = parts.hostname or ""
    target = hosts.get(address) or hosts.get(host)
    if target is None:
        return value
    netloc = f"{login}@{target}" if "@" in parts.netloc else target
    return urlunsplit(parts._replace(netloc=netloc))


def volume_paths(compose: dict[str, Any], env: Mapping[str, str], base: Path = REPO) -> dict[str, Path]:
    """Container path -> host path of the Airflow services' bind mounts (relative to the compose file)."""
    paths = {}
    for volume in compose["x-airflow-common"]["volumes"]:
        source, target = interpolate(volume, env).split(":")[:2]
        paths[target] = (base / source).resolve()
    return paths


def rewrite_paths(value: str, paths: Mapping[str, Path]) -> str:
    """A container path under one of ``paths`` (longest first) becomes the host path."""
    for container in sorted(paths, key=len, reverse=True):
        if value == container or value.startswith(container + "/"):
            return str(paths[container]) + value[len(container) :]
    return value


def native_environment(
    compose: dict[str, Any],
    env: Mapping[str, str],
    hosts: Mapping[str, str],
    paths: Mapping[str, Path],
) -> dict[str, str]:
    """``x-airflow-common``'s environment for processes on this host: hosts and paths translated, the
    ``NOT_NATIVE`` settings left out (the caller sets its own)."""
    mounts = {**volume_paths(compose, env), **paths}
    native = {}
    for name, value in airflow_environment(compose, env).items():
        if name not in NOT_NATIVE:
            native[name] = rewrite_paths(rewrite_hosts(value, hosts), mounts)
    return native
