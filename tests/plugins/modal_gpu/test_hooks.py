"""``ModalGPUHook``: spawn, poll and cancel through the real modal client, against the fake control plane."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import modal
import modal.exception
import pytest
from airflow.providers.modal.exceptions import ModalConnectionError

import modal_gpu.hooks as hooks_module
from modal_gpu.hooks import CallStatus, ModalGPUHook, describe_error, poll_delays
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
WAITS = ["wait", "await_done"]  # the polling loop's sync and async twins: same behaviour


@pytest.fixture
def hook() -> Iterator[ModalGPUHook]:
    hook = ModalGPUHook()
    yield hook
    if hook._client is not None:
        hook._client.close()


def run_wait(hook: ModalGPUHook, twin: str, call_id: str, poll_interval: float, **kwargs: Any) -> CallStatus:
    """``hook.wait(...)``, or ``hook.await_done(...)`` run to completion in a fresh event loop."""
    if twin == "wait":
        return hook.wait(call_id, poll_interval, **kwargs)
    return asyncio.run(hook.await_done(call_id, poll_interval, **kwargs))


class RecordingLog:
    """The ``log`` the polling loop writes progress to: ``(level, message)`` of each line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _record(self, level: str, message: str, *args: Any) -> None:
        self.lines.append((level, message % args))

    def debug(self, message: str, *args: Any) -> None:
        self._record("debug", message, *args)

    def info(self, message: str, *args: Any) -> None:
        self._record("info", message, *args)

    def warning(self, message: str, *args: Any) -> None:
        self._record("warning", message, *args)


UNREACHABLE = modal.exception.ConnectionError("connection refused")


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModalGPUHook, list[CallStatus | Exception]]]:
    """A hook whose status checks answer from a script (a status, or an error to raise), no network."""
    hook = ModalGPUHook()
    script: list[CallStatus | Exception] = []

    def poll(call_id: str) -> CallStatus:
        answer = script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def apoll(call_id: str) -> CallStatus:
        return poll(call_id)

    monkeypatch.setattr(hook, "poll", poll)
    monkeypatch.setattr(hook, "apoll", apoll)
    yield hook, script
    assert script == [], "the loop stopped before the script ran out"


def running(n: int) -> list[CallStatus]:
    return [CallStatus("fc-1", "running")] * n


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


class TestPollDelays:
    def test_backs_off_from_half_a_second_up_to_the_poll_interval(self):
        delays = poll_delays(5.0)

        assert [next(delays) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]

    def test_a_first_delay_at_the_interval_is_a_steady_interval(self):
        delays = poll_delays(2.0, first=2.0)

        assert [next(delays) for _ in range(3)] == [2.0, 2.0, 2.0]

    def test_doubling_stops_after_ten_steps(self):
        delays = poll_delays(10_000.0)

        assert [next(delays) for _ in range(13)][-3:] == [512.0, 512.0, 512.0]


@pytest.mark.parametrize("twin", WAITS)
class TestModalGPUHookWaitOutcome:
    """``wait``/``await_done`` return the final status; what a failure means is the caller's to say."""

    def test_returns_success_with_the_result_after_the_running_checks(self, scripted, clock, twin):
        hook, script = scripted
        script += [*running(3), CallStatus("fc-1", "success", result={"val_l1": 0.1})]

        status = run_wait(hook, twin, "fc-1", 10.0)

        assert status == CallStatus("fc-1", "success", result={"val_l1": 0.1})
        assert clock.sleeps == [0.5, 1.0, 2.0]

    def test_returns_a_failed_call_instead_of_raising(self, scripted, clock, twin):
        hook, script = scripted
        script += [*running(1), CallStatus("fc-1", "failed", error="RuntimeError: NaN loss")]

        status = run_wait(hook, twin, "fc-1", 10.0)

        assert (status.state, status.error) == ("failed", "RuntimeError: NaN loss")

    def test_a_call_already_finished_returns_without_sleeping(self, scripted, clock, twin):
        hook, script = scripted
        script.append(CallStatus("fc-1", "success", result=7))

        assert run_wait(hook, twin, "fc-1", 10.0).result == 7
        assert clock.sleeps == []

    def test_waits_on_a_real_call_until_it_finishes(self, plane, twin):
        hook = ModalGPUHook()
        try:
            call_id = hook.spawn(APP, "sleep", {"seconds": 0.5, "value": {"fold": 2}})

            status = run_wait(hook, twin, call_id, 0.2)
        finally:
            hook.client.close()

        assert status == CallStatus(call_id, "success", result={"fold": 2})

    @pytest.mark.parametrize("poll_interval", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")])
    def test_poll_interval_must_be_positive(self, scripted, twin, poll_interval):
        hook, _ = scripted

        with pytest.raises(ValueError, match="poll_interval"):
            run_wait(hook, twin, "fc-1", poll_interval)


@pytest.mark.parametrize("twin", WAITS)
class TestModalGPUHookWaitUnreachable:
    """Modal unreachable is not a failed call: checks repeat every poll interval for a grace period."""

    def test_keeps_checking_every_interval_without_advancing_the_back_off(self, scripted, clock, twin):
        hook, script = scripted
        script += [*running(1), UNREACHABLE, UNREACHABLE, *running(1), CallStatus("fc-1", "success")]

        assert run_wait(hook, twin, "fc-1", 4.0).state == "success"
        assert clock.sleeps == [0.5, 4.0, 4.0, 1.0]

    def test_raises_the_connection_error_once_the_grace_period_is_over(self, scripted, clock, twin):
        hook, script = scripted
        script += [UNREACHABLE] * 4  # at 0, 4, 8 s: within 10 s; at 12 s: past it

        with pytest.raises(modal.exception.ConnectionError, match="connection refused"):
            run_wait(hook, twin, "fc-1", 4.0, unreachable_grace_s=10.0)
        assert clock.sleeps == [4.0, 4.0, 4.0]

    def test_an_answer_from_modal_restarts_the_grace_period(self, scripted, clock, twin):
        hook, script = scripted
        outage = [UNREACHABLE] * 3  # 8 s of a 10 s grace period each
        script += [*outage, *running(1), *outage, CallStatus("fc-1", "success")]

        assert run_wait(hook, twin, "fc-1", 4.0, unreachable_grace_s=10.0).state == "success"

    def test_default_grace_period_is_the_module_setting_at_call_time(
        self, scripted, clock, monkeypatch, twin
    ):
        hook, script = scripted
        monkeypatch.setattr(hooks_module, "UNREACHABLE_GRACE_S", 5.0)
        script += [UNREACHABLE] * 3  # at 0 and 4 s: within 5 s; at 8 s: past it

        with pytest.raises(modal.exception.ConnectionError):
            run_wait(hook, twin, "fc-1", 4.0)

    def test_each_unreachable_check_is_logged_as_a_warning(self, scripted, clock, twin):
        hook, script = scripted
        script += [UNREACHABLE, CallStatus("fc-1", "success")]
        log = RecordingLog()

        run_wait(hook, twin, "fc-1", 4.0, log=log)

        assert log.lines == [("warning", "Modal unreachable (connection refused); checking call fc-1 again")]


@pytest.mark.parametrize("twin", WAITS)
class TestModalGPUHookWaitProgressLog:
    def test_notes_a_running_call_after_a_minute_then_every_five_minutes(self, scripted, clock, twin):
        hook, script = scripted
        script += [*running(13), CallStatus("fc-1", "success")]  # a check every 30 s for 6.5 minutes
        log = RecordingLog()

        run_wait(hook, twin, "fc-1", 30.0, first_delay=30.0, log=log)

        notes = [message for level, message in log.lines if level == "info"]
        assert notes == ["Modal call fc-1 still running (60 s)", "Modal call fc-1 still running (360 s)"]
        assert [level for level, _ in log.lines].count("debug") == 11

    def test_logs_to_the_hooks_own_logger_by_default(self, scripted, clock, monkeypatch, twin):
        hook, script = scripted
        script += [*running(1), CallStatus("fc-1", "success")]
        log = RecordingLog()
        monkeypatch.setattr(ModalGPUHook, "log", property(lambda self: log))

        run_wait(hook, twin, "fc-1", 1.0)

        assert log.lines == [("debug", "Modal call fc-1 still running; next check in 0.5 s")]


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
