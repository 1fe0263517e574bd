"""The W&B API key for folds trained in the Airflow worker (backend local), from an Airflow connection.

Why a connection: keys must never travel in DAG params, XCom or rendered templates. The key is read in
the fold's own task process (Airflow masks a connection's password in every log from then on) and put
into that process's environment as ``WANDB_API_KEY`` only while the fold trains, which is where wandb
reads it. Backend modal never sees this connection: its folds read the key from a Modal secret attached
at deploy time (see ``lerobot_kfold.modal_app``).

The connection (id ``wandb_default``, or the one named by ``LEROBOT_KFOLD_WANDB_CONN_ID``; any type)
holds the key as its password. Without one, wandb falls back to the worker's own ``WANDB_API_KEY`` or
``wandb login`` (``~/.netrc``).
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_CONN_ID = "wandb_default"
CONN_ID_ENV_VAR = "LEROBOT_KFOLD_WANDB_CONN_ID"
ENV_VAR = "WANDB_API_KEY"
WANDB_HOST = "api.wandb.ai"


def connection_id() -> str:
    """The Airflow connection holding the W&B key: ``$LEROBOT_KFOLD_WANDB_CONN_ID`` or ``wandb_default``."""
    return os.environ.get(CONN_ID_ENV_VAR) or DEFAULT_CONN_ID


def key_from_connection(conn_id: str) -> str | None:
    """The password of Airflow connection ``conn_id``, or None when there is no such connection."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(conn_id)  # registers the password with the log masker
    except AirflowNotFoundException:
        return None
    return connection.password or None


def has_worker_login() -> bool:
    """Whether wandb can find a key in this worker without a connection: the environment or netrc."""
    if os.environ.get(ENV_VAR):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_key_available(wandb_mode: str, conn_id: str) -> None:
    """Fail before training when ``wandb_mode='online'`` has no key to log in with (backend local)."""
    if wandb_mode != "online" or key_from_connection(conn_id) or has_worker_login():
        return
    raise ValueError(
        f"wandb_mode 'online' needs a W&B API key: add an Airflow connection {conn_id!r} with the key as "
        f"its password, or set {ENV_VAR} (or run `wandb login`) on the workers; or choose wandb_mode "
        "'offline' or 'disabled'."
    )


@contextmanager
def key_in_environment(conn_id: str) -> Iterator[None]:
    """Within the block, ``WANDB_API_KEY`` is the connection's password (if the connection exists);
    the environment is restored afterwards."""
    key = key_from_connection(conn_id)
    if key is None:
        yield
        return
    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = key
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before
