"""Fixtures for the ``modal_gpu`` tests: the real modal client against a fake Modal control plane.

Each test module starts one control plane (a subprocess on 127.0.0.1, see ``tests/fake_modal``) that
accepts only the token of the ``modal_default`` connection (``support.CONN_LOGIN``/``CONN_PASSWORD``).
Nothing here sets ``MODAL_TOKEN_ID``/``MODAL_TOKEN_SECRET`` (``tests/conftest.py`` removes them), so a
call that reaches a function proves the credentials came from the Airflow connection.
"""

from __future__ import annotations

import types
from collections.abc import Iterator

import modal
import pytest

import modal_gpu.hooks as hooks_module
from scripts.fake_modal.control_plane import FakeModalControlPlane
from tests.plugins.modal_gpu.support import FUNCTIONS, FakeClock, TokenCheckingControlPlane, connection_json


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeModalControlPlane]:
    with TokenCheckingControlPlane(FUNCTIONS, tmp_path_factory.mktemp("fake_modal")) as plane:
        yield plane


@pytest.fixture
def modal_connection(plane: FakeModalControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``modal_default`` holds the accepted token; the modal client talks to this module's plane."""
    monkeypatch.setenv("MODAL_SERVER_URL", plane.url)
    monkeypatch.setenv("AIRFLOW_CONN_MODAL_DEFAULT", connection_json())
    modal.Client._set_env_client(None)  # process-wide singleton: never reuse one built for another server
    yield
    modal.Client._set_env_client(None)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """``modal_gpu.hooks`` sleeps on a fake clock: polling tests take no time."""
    clock = FakeClock()
    monkeypatch.setattr(hooks_module, "time", clock)
    monkeypatch.setattr(hooks_module, "asyncio", types.SimpleNamespace(sleep=clock.asleep))
    return clock
