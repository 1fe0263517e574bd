"""Shared pieces of the ``modal_gpu`` tests: the fake control plane's functions, its token, helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import modal
import pytest

from scripts.fake_modal.control_plane import FakeModalControlPlane

APP = "fake-app"
SAMPLE_APP = "fake-sample-app"
FUNCTIONS = {
    f"{APP}/echo": "tests.fake_modal.functions:echo",
    f"{APP}/sleep": "tests.fake_modal.functions:sleep_then_return",
    f"{APP}/fail": "tests.fake_modal.functions:fail",
    f"{SAMPLE_APP}/add": "tests.fake_modal.sample_app:add",
}
# The token of the ``modal_default`` connection, and the only one the control plane accepts.
CONN_LOGIN = "ak-from-airflow-connection"
CONN_PASSWORD = "as-from-airflow-connection"


class TokenCheckingControlPlane(FakeModalControlPlane):
    """The fake control plane, answering only clients that send the connection's token."""

    def command(self) -> list[str]:
        return [*super().command(), "--token", f"{CONN_LOGIN}:{CONN_PASSWORD}"]


def connection_json(login: str | None = CONN_LOGIN, password: str | None = CONN_PASSWORD) -> str:
    """An ``AIRFLOW_CONN_*`` value for a ``modal`` connection (JSON form)."""
    conn: dict[str, Any] = {"conn_type": "modal"}
    if login is not None:
        conn["login"] = login
    if password is not None:
        conn["password"] = password
    return json.dumps(conn)


def unreachable_client(workdir: Path) -> modal.Client:
    """A real client whose control plane went away after it connected (Modal unreachable for a moment).

    Its calls fail fast with ``modal.exception.ConnectionError``; a client that never connected would
    instead keep retrying for about a minute.
    """
    plane = TokenCheckingControlPlane({}, workdir).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MODAL_SERVER_URL", plane.url)
            client = modal.Client.from_credentials(CONN_LOGIN, CONN_PASSWORD)
        client.hello()
    finally:
        plane.stop()
    return client


def event_for(plane: FakeModalControlPlane, type: str, call_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The plane's first ``type`` event for ``call_id``, waiting for it up to ``timeout`` seconds."""
    return plane.wait_for(
        lambda: next((e for e in plane.events(type) if e["call_id"] == call_id), None), timeout=timeout
    )


def events_of(plane: FakeModalControlPlane, type: str, call_id: str) -> list[dict[str, Any]]:
    """All ``type`` events for ``call_id`` so far (no waiting)."""
    return [e for e in plane.events(type) if e["call_id"] == call_id]


class FakeClock:
    """Stands in for ``time`` and ``asyncio.sleep`` in ``modal_gpu.hooks``: sleeping only moves the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
