"""``ModalFunctionCallTrigger``: waits on a Modal call in the triggerer's event loop and fires once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from types import SimpleNamespace

import modal
import modal.exception
import pytest
from airflow._shared.module_loading import import_string  # what the triggerer uses
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

from modal_gpu.hooks import ModalGPUHook
from modal_gpu.triggers import ModalFunctionCallTrigger
from tests.plugins.modal_gpu.support import APP, event_for, events_of, unreachable_client

POLL = 0.2
# The task instance a triggerer gives a trigger (the fields the trigger reads).
RUNTIME_TI = SimpleNamespace(dag_id="d", run_id="r", task_id="kfold_cv.train_fold", map_index=2)


@pytest.fixture
def hook(modal_connection) -> Iterator[ModalGPUHook]:
    """Spawns the calls the trigger waits on (the trigger builds its own hook, as in the triggerer)."""
    hook = ModalGPUHook()
    yield hook
    if hook._client is not None:
        hook._client.close()


def run_trigger(trigger: ModalFunctionCallTrigger, timeout: float = 15.0) -> list[TriggerEvent]:
    """Every event ``run()`` yields before it returns."""

    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout=timeout))


class TestModalFunctionCallTriggerSerialization:
    @pytest.mark.parametrize(
        "kwargs",
        [
            pytest.param({"call_id": "fc-123"}, id="defaults"),
            pytest.param(
                {
                    "call_id": "fc-456",
                    "modal_conn_id": "modal_team",
                    "poll_interval": 2.5,
                    "cancel_on_kill": False,
                    "first_check_after": 10.0,
                    "reattach_on_clear": False,
                    "end_from_trigger": False,
                },
                id="all-settings",
            ),
        ],
    )
    def test_serialize_round_trip_rebuilds_an_equal_trigger(self, kwargs):
        classpath, serialized = ModalFunctionCallTrigger(**kwargs).serialize()

        rebuilt = import_string(classpath)(**serialized)

        assert isinstance(rebuilt, ModalFunctionCallTrigger)
        assert rebuilt.serialize() == (classpath, serialized)
        assert json.loads(json.dumps(serialized)) == serialized  # stored in the metadata database

    def test_classpath_is_importable_from_the_plugins_folder(self):
        classpath, _ = ModalFunctionCallTrigger(call_id="fc-1").serialize()

        assert classpath == "modal_gpu.triggers.ModalFunctionCallTrigger"
        assert import_string(classpath) is ModalFunctionCallTrigger

    def test_defaults_use_modal_default_and_cancel_on_kill(self):
        _, serialized = ModalFunctionCallTrigger(call_id="fc-1").serialize()

        assert serialized == {
            "call_id": "fc-1",
            "modal_conn_id": "modal_default",
            "poll_interval": 10.0,
            "cancel_on_kill": True,
            "first_check_after": 0.0,
            "reattach_on_clear": True,
            "end_from_trigger": True,
            "progress_dict": None,
            "progress_key": None,
            "stall_after_s": 0.0,
        }


class TestModalFunctionCallTriggerRun:
    def test_yields_one_success_event_with_the_result_when_the_call_finishes(self, plane, hook):
        call_id = hook.spawn(APP, "sleep", {"seconds": 0.7, "value": {"fold": 1, "val_l1": 0.5}})

        events = run_trigger(ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL))

        assert events == [
            TriggerEvent({"status": "success", "call_id": call_id, "result": {"fold": 1, "val_l1": 0.5}})
        ]
        assert event_for(plane, "finished", call_id)["status"] == "success"

    def test_in_a_triggerer_a_success_stores_the_result_and_ends_the_task(self, plane, hook, monkeypatch):
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import SetXCom

        sent = []

        class Comms:  # the triggerer's channel to the execution API
            async def asend(self, message):
                sent.append(message)

        monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Comms(), raising=False)
        call_id = hook.spawn(APP, "sleep", {"seconds": 0.3, "value": {"fold": 3, "val_l1": 0.25}})
        trigger = ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL)
        trigger.task_instance = RUNTIME_TI  # what the triggerer sets

        events = run_trigger(trigger)

        assert len(events) == 1 and isinstance(events[0], TaskSuccessEvent)
        assert events[0].xcoms is None  # stored through the channel instead (see the module docstring)
        assert sent == [
            SetXCom(
                key="return_value",
                value={"fold": 3, "val_l1": 0.25},
                dag_id="d",
                run_id="r",
                task_id="kfold_cv.train_fold",
                map_index=2,
            )
        ]

    @pytest.mark.parametrize("outcome", ["failure", "end_from_trigger=False", "no triggerer channel"])
    def test_in_a_triggerer_an_error_or_opting_out_resumes_the_task(self, plane, hook, outcome):
        if outcome == "failure":
            call_id, options = hook.spawn(APP, "fail", {"message": "fold 2 diverged"}), {}
        else:
            options = {"end_from_trigger": False} if outcome == "end_from_trigger=False" else {}
            call_id = hook.spawn(APP, "echo", {"x": 1})
        trigger = ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL, **options)
        trigger.task_instance = RUNTIME_TI

        events = run_trigger(trigger)

        assert len(events) == 1 and not isinstance(events[0], TaskSuccessEvent)
        assert events[0].payload["status"] == ("error" if outcome == "failure" else "success")

    def test_yields_one_error_event_with_the_remote_message(self, plane, hook):
        call_id = hook.spawn(APP, "fail", {"message": "fold 2 diverged"})

        events = run_trigger(ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL))

        assert events == [
            TriggerEvent({"status": "error", "call_id": call_id, "message": "RuntimeError: fold 2 diverged"})
        ]

    def test_yields_error_for_a_call_cancelled_elsewhere(self, plane, hook):
        call_id = hook.spawn(APP, "sleep", {"seconds": 30.0, "value": None})
        hook.cancel(call_id)

        (event,) = run_trigger(ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL))

        assert event.payload["status"] == "error"
        assert event.payload["message"].startswith("RemoteError")

    def test_yields_error_naming_a_missing_connection(self, modal_connection):
        (event,) = run_trigger(
            ModalFunctionCallTrigger(call_id="fc-1", modal_conn_id="no_such_modal_conn", poll_interval=POLL)
        )

        assert event.payload["status"] == "error"
        assert event.payload["call_id"] == "fc-1"
        assert "no_such_modal_conn" in event.payload["message"]

    def test_checks_every_poll_interval_without_back_off(self, plane, hook, monkeypatch):
        """No back-off in the triggerer: ``first_check_after`` already let a short call finish, and a
        triggerer serving many folds should not check each twice a second."""
        call_id = hook.spawn(APP, "sleep", {"seconds": 0.5, "value": "done"})
        waited: list[tuple[str, float, float]] = []
        real_await_done = ModalGPUHook.await_done

        async def recording_await_done(self, cid, poll_interval, **kwargs):
            waited.append((cid, poll_interval, kwargs["first_delay"]))
            return await real_await_done(self, cid, poll_interval, **kwargs)

        monkeypatch.setattr(ModalGPUHook, "await_done", recording_await_done)

        (event,) = run_trigger(ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL))

        assert event.payload == {"status": "success", "call_id": call_id, "result": "done"}
        assert waited == [(call_id, POLL, POLL)]

    def test_modal_unreachable_past_the_grace_period_yields_an_error(self, hook, monkeypatch, tmp_path):
        call_id = hook.spawn(APP, "sleep", {"seconds": 5.0, "value": None})
        offline = unreachable_client(tmp_path)
        monkeypatch.setattr(
            ModalGPUHook, "_call", lambda self, cid: modal.FunctionCall.from_id(cid, client=offline)
        )
        monkeypatch.setattr("modal_gpu.hooks.UNREACHABLE_GRACE_S", 0.3)
        try:
            (event,) = run_trigger(ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL))
        finally:
            offline.close()

        assert event.payload["status"] == "error"
        assert event.payload["message"].startswith("ConnectionError")

    def test_keeps_waiting_while_modal_is_briefly_unreachable(self, plane, hook, monkeypatch, tmp_path):
        call_id = hook.spawn(APP, "sleep", {"seconds": 1.0, "value": "done"})
        offline = unreachable_client(tmp_path)
        real_call = ModalGPUHook._call
        polls: list[str] = []

        def flaky_call(self: ModalGPUHook, cid: str) -> modal.FunctionCall:
            polls.append(cid)
            if len(polls) <= 2:  # the first two status checks cannot reach Modal
                return modal.FunctionCall.from_id(cid, client=offline)
            return real_call(self, cid)

        monkeypatch.setattr(ModalGPUHook, "_call", flaky_call)
        try:
            events = run_trigger(ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL))
        finally:
            offline.close()

        assert events == [TriggerEvent({"status": "success", "call_id": call_id, "result": "done"})]

    def test_a_trigger_that_starts_while_modal_is_unreachable_keeps_trying(self, plane, hook, monkeypatch):
        # What a triggerer restarted during an outage does: the client cannot connect at first.
        call_id = hook.spawn(APP, "sleep", {"seconds": 0.5, "value": "done"})
        real_client = ModalGPUHook.client
        attempts: list[int] = []

        def flaky_client(self: ModalGPUHook) -> modal.Client:
            attempts.append(1)
            if len(attempts) <= 2:
                raise modal.exception.ConnectionError("Could not connect to the Modal server.")
            return real_client.fget(self)

        monkeypatch.setattr(ModalGPUHook, "client", property(flaky_client))

        events = run_trigger(ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL))

        assert events == [TriggerEvent({"status": "success", "call_id": call_id, "result": "done"})]
        assert len(attempts) >= 3


class TestModalFunctionCallTriggerOnKill:
    def test_on_kill_cancels_the_call(self, plane, hook):
        call_id = hook.spawn(APP, "sleep", {"seconds": 30.0, "value": None})

        asyncio.run(ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL).on_kill())

        assert event_for(plane, "cancel", call_id)["terminate_containers"] is False
        assert event_for(plane, "finished", call_id)["status"] == "cancelled"

    def test_on_kill_cancels_while_run_is_waiting(self, plane, hook):
        """As the triggerer does when a user marks the deferred task failed: cancel run(), then on_kill()."""
        call_id = hook.spawn(APP, "sleep", {"seconds": 30.0, "value": None})
        trigger = ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL)

        async def user_kills_the_task() -> None:
            async def consume() -> None:
                async for _ in trigger.run():
                    pass

            waiting = asyncio.create_task(consume())
            await asyncio.sleep(3 * POLL)  # a few status checks: still running
            assert not waiting.done()
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await trigger.on_kill()

        asyncio.run(asyncio.wait_for(user_kills_the_task(), timeout=15))

        assert event_for(plane, "cancel", call_id)
        assert event_for(plane, "finished", call_id)["status"] == "cancelled"

    @pytest.mark.parametrize(
        ("state", "reattach_on_clear", "cancelled"),
        [
            pytest.param(None, True, False, id="cleared-left-for-the-next-try"),
            pytest.param("scheduled", True, False, id="cleared-and-scheduled"),
            pytest.param("failed", True, True, id="marked-failed"),
            pytest.param("success", True, True, id="marked-success"),
            pytest.param(None, False, True, id="cleared-but-no-try-reattaches"),
        ],
    )
    def test_on_kill_tells_a_clear_from_a_mark_failed(
        self, plane, hook, monkeypatch, state, reattach_on_clear, cancelled
    ):
        call_id = hook.spawn(APP, "sleep", {"seconds": 3.0, "value": None})
        trigger = ModalFunctionCallTrigger(
            call_id=call_id, poll_interval=POLL, reattach_on_clear=reattach_on_clear
        )

        async def read_state(ti, log) -> str | None:
            return state

        monkeypatch.setattr("modal_gpu.task_state.aread", read_state)
        asyncio.run(trigger.on_kill())

        if cancelled:
            assert event_for(plane, "cancel", call_id)
        else:
            assert events_of(plane, "cancel", call_id) == []
            assert hook.poll(call_id).state == "running"

    def test_cancel_on_kill_false_leaves_the_call_running(self, plane, hook):
        call_id = hook.spawn(APP, "sleep", {"seconds": 2.0, "value": "kept"})

        asyncio.run(
            ModalFunctionCallTrigger(call_id=call_id, poll_interval=POLL, cancel_on_kill=False).on_kill()
        )

        assert events_of(plane, "cancel", call_id) == []
        assert hook.poll(call_id).state == "running"
