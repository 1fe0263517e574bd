"""``ModalGPUHook``: spawn, poll and cancel through the real modal client, against the fake control plane."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import modal
import modal.exception
import pytest
from airflow.providers.modal.exceptions import ModalConnectionError

from modal_gpu.hooks import CallStatus, ModalGPUHook, describe_error
from tests.plugins.modal_gpu.support import (
    APP,
    CONN_LOGIN,
    CONN_PASSWORD,
    SAMPLE_APP,
    connection_json,
    event_for,
    unreachable_client,
)

pytestmark = pytest.mark.usefixtures("modal_connection")


@pytest.fixture
def hook() -> Iterator[ModalGPUHook]:
    hook = ModalGPUHook()
    yield hook
    if hook._client is not None:
        hook._client.close()


def _finished(plane, hook: ModalGPUHook, call_id: str) -> CallStatus:
    """The call's status once the plane reports it finished."""
    event_for(plane, "finished", call_id)
    return hook.poll(call_id)


class TestModalGPUHookSpawn:
    @pytest.mark.parametrize(
        ("options", "recorded"),
        [
            pytest.param(
                {"gpu": "H100", "timeout": 600, "retries": 2}, ("H100", 600, 2), id="gpu-timeout-retries"
            ),
            pytest.param({"gpu": "A10G:2"}, ("A10G:2", None, None), id="multi-gpu-only"),
            pytest.param({"retries": 0}, (None, None, 0), id="zero-retries-is-explicit"),
            pytest.param({}, (None, None, None), id="function-defaults"),
        ],
    )
    def test_spawn_applies_per_call_options_through_with_options(self, plane, hook, options, recorded):
        call_id = hook.spawn(APP, "echo", {"fold": 3, "steps": 10}, **options)

        assert call_id.startswith("fc-")
        spawn = event_for(plane, "spawn", call_id)
        assert (spawn["app"], spawn["function"]) == (APP, "echo")
        assert (spawn["gpu"], spawn["timeout"], spawn["retries"]) == recorded
        assert spawn["kwargs_keys"] == ["fold", "steps"]

    def test_spawn_does_not_wait_for_the_call(self, plane, hook):
        call_id = hook.spawn(APP, "sleep", {"seconds": 2.0, "value": None})

        assert hook.poll(call_id).state == "running"

    @pytest.mark.parametrize(
        ("app", "name", "named"),
        [
            pytest.param(APP, "no-such-function", "no-such-function", id="unknown-function"),
            pytest.param("no-such-app", "echo", "no-such-app", id="unknown-app"),
        ],
    )
    def test_unknown_function_raises_not_found_on_spawn(self, plane, hook, app, name, named):
        spawned_before = len(plane.spawns())

        with pytest.raises(modal.exception.NotFoundError, match=named):
            hook.spawn(app, name, {})
        assert len(plane.spawns()) == spawned_before


class TestModalGPUHookPoll:
    def test_poll_reports_running_then_success_with_the_result(self, plane, hook):
        call_id = hook.spawn(APP, "sleep", {"seconds": 0.5, "value": {"val_l1": 0.25}})

        running = hook.poll(call_id)
        assert running == CallStatus(call_id, "running")
        assert not running.done

        finished = _finished(plane, hook, call_id)
        assert finished == CallStatus(call_id, "success", result={"val_l1": 0.25})
        assert finished.done

    def test_app_function_result_comes_back(self, plane, hook):
        call_id = hook.spawn(SAMPLE_APP, "add", {"a": 2, "b": 3})

        assert _finished(plane, hook, call_id).result == 5

    @pytest.mark.parametrize(
        ("message", "error"),
        [
            pytest.param("fold 2 diverged", "RuntimeError: fold 2 diverged", id="one-line"),
            pytest.param(
                "CUDA out of memory\n  at step 12", "RuntimeError: CUDA out of memory", id="first-line"
            ),
        ],
    )
    def test_remote_exception_becomes_failed_with_type_and_message(self, plane, hook, message, error):
        call_id = hook.spawn(APP, "fail", {"message": message})

        status = _finished(plane, hook, call_id)

        assert status.state == "failed"
        assert status.error == error
        assert status.result is None

    def test_unknown_call_id_is_failed_not_running(self, hook):
        status = hook.poll("fc-never-spawned")

        assert status.state == "failed"
        assert status.error.startswith("NotFoundError:")

    def test_unreachable_control_plane_is_not_reported_as_a_failed_call(self, hook, monkeypatch, tmp_path):
        call_id = hook.spawn(APP, "sleep", {"seconds": 5.0, "value": None})
        offline = unreachable_client(tmp_path)
        monkeypatch.setattr(hook, "_call", lambda cid: modal.FunctionCall.from_id(cid, client=offline))
        try:
            # The state of the call is unknown, not "failed": callers must be able to tell the two apart.
            with pytest.raises(modal.exception.ConnectionError):
                hook.poll(call_id)
        finally:
            offline.close()


class TestModalGPUHookCancel:
    @pytest.mark.parametrize(
        "terminate_containers",
        [pytest.param(False, id="input-only"), pytest.param(True, id="terminate-containers")],
    )
    def test_cancel_is_recorded_and_the_call_then_polls_as_failed(self, plane, hook, terminate_containers):
        call_id = hook.spawn(APP, "sleep", {"seconds": 30.0, "value": "never"})

        hook.cancel(call_id, terminate_containers=terminate_containers)

        cancel = event_for(plane, "cancel", call_id)
        assert cancel["terminate_containers"] is terminate_containers
        assert event_for(plane, "finished", call_id)["status"] == "cancelled"
        status = hook.poll(call_id)
        assert status.state == "failed"
        assert status.error.startswith("RemoteError")  # how the modal client reports a cancelled input

    def test_cancel_keeps_containers_by_default(self, plane, hook):
        call_id = hook.spawn(APP, "sleep", {"seconds": 30.0, "value": "never"})

        hook.cancel(call_id)

        assert event_for(plane, "cancel", call_id)["terminate_containers"] is False


class TestModalGPUHookAsync:
    """``apoll``/``acancel`` run in the triggerer's event loop: same answers as the sync methods."""

    def test_apoll_reports_running_then_success(self, plane, hook):
        call_id = hook.spawn(APP, "sleep", {"seconds": 0.5, "value": [1, 2]})

        async def scenario() -> tuple[CallStatus, CallStatus]:
            first = await hook.apoll(call_id)
            while (status := await hook.apoll(call_id)).state == "running":
                await asyncio.sleep(0.05)
            return first, status

        first, last = asyncio.run(asyncio.wait_for(scenario(), timeout=10))

        assert first == CallStatus(call_id, "running")
        assert last == CallStatus(call_id, "success", result=[1, 2])

    def test_apoll_reports_a_remote_failure(self, plane, hook):
        call_id = hook.spawn(APP, "fail", {"message": "bad batch"})
        event_for(plane, "finished", call_id)

        status = asyncio.run(hook.apoll(call_id))

        assert (status.state, status.error) == ("failed", "RuntimeError: bad batch")

    def test_acancel_is_recorded_and_apoll_then_reports_failed(self, plane, hook):
        call_id = hook.spawn(APP, "sleep", {"seconds": 30.0, "value": None})

        async def scenario() -> CallStatus:
            await hook.acancel(call_id, terminate_containers=True)
            return await hook.apoll(call_id)

        status = asyncio.run(scenario())

        assert event_for(plane, "cancel", call_id)["terminate_containers"] is True
        assert status.state == "failed"


class TestModalGPUHookCredentials:
    """Credentials follow the providers-modal ``ModalHook`` rules; the plane accepts only the connection's
    token, so a call that gets through proves which credentials were sent."""

    def test_credentials_come_from_the_airflow_connection(self, plane, hook):
        assert hook.credentials == (CONN_LOGIN, CONN_PASSWORD)

        call_id = hook.spawn(APP, "echo", {"x": 1})

        assert _finished(plane, hook, call_id).result == {"x": 1}

    def test_connection_wins_over_ambient_modal_credentials(self, plane, hook, monkeypatch):
        monkeypatch.setenv("MODAL_TOKEN_ID", "ak-ambient")
        monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-ambient")

        call_id = hook.spawn(APP, "echo", {"x": 2})

        assert _finished(plane, hook, call_id).result == {"x": 2}

    def test_named_connection_is_used(self, plane, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_MODAL_TEAM", connection_json())
        monkeypatch.setenv("AIRFLOW_CONN_MODAL_DEFAULT", connection_json("ak-other", "as-other"))
        hook = ModalGPUHook(modal_conn_id="modal_team")
        try:
            assert hook.spawn(APP, "echo", {}).startswith("fc-")
        finally:
            hook.client.close()

    def test_a_token_the_control_plane_rejects_fails_the_spawn(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_MODAL_DEFAULT", connection_json(CONN_LOGIN, "as-revoked"))
        hook = ModalGPUHook()
        try:
            with pytest.raises(modal.exception.AuthError, match="Invalid token"):
                hook.spawn(APP, "echo", {})
        finally:
            hook.client.close()

    @pytest.mark.parametrize(
        ("login", "password", "missing"),
        [
            pytest.param(CONN_LOGIN, None, "Token Secret", id="login-only"),
            pytest.param(None, CONN_PASSWORD, "Token ID", id="password-only"),
        ],
    )
    def test_half_filled_connection_raises_modal_connection_error(
        self, plane, monkeypatch, login, password, missing
    ):
        monkeypatch.setenv("AIRFLOW_CONN_MODAL_DEFAULT", connection_json(login, password))
        spawned_before = len(plane.spawns())

        with pytest.raises(ModalConnectionError, match=missing):
            ModalGPUHook().spawn(APP, "echo", {})
        assert len(plane.spawns()) == spawned_before


class TestDescribeError:
    @pytest.mark.parametrize(
        ("exc", "line"),
        [
            pytest.param(ValueError("bad k"), "ValueError: bad k", id="message"),
            pytest.param(RuntimeError("first\nsecond"), "RuntimeError: first", id="first-line-only"),
            pytest.param(KeyError("fold"), "KeyError: 'fold'", id="repr-like-message"),
            pytest.param(RuntimeError(), "RuntimeError: (no message)", id="no-message"),
            pytest.param(RuntimeError("   "), "RuntimeError: (no message)", id="blank-message"),
        ],
    )
    def test_one_line_with_type_and_message(self, exc, line):
        assert describe_error(exc) == line
