"""``ModalGPUOperator``: spawn or re-attach, defer or poll, cancel, and the local backend.

The Airflow context is a small stand-in (``task_state_store`` with get/set, ``ti.xcom_push``): these are
unit tests of one module. The Modal side is real: the modal client against the fake control plane.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import modal
import pytest
from airflow.sdk.bases.resumablejobmixin import ResumableJobMixin
from airflow.sdk.exceptions import TaskDeferred

from modal_gpu.hooks import CallStatus, ModalGPUHook
from modal_gpu.links import CALL_ID_KEY, ModalCallLink
from modal_gpu.operators import DEFER_FIRST_CHECK_S, ModalCallFailed, ModalGPUOperator
from modal_gpu.triggers import ModalFunctionCallTrigger
from tests.fake_modal import functions as fake_functions
from tests.plugins.modal_gpu.support import APP, SAMPLE_APP, event_for, events_of, unreachable_client

POLL = 0.1
KEY = ModalGPUOperator.external_id_key  # task_state_store and XCom


class InMemoryTaskStateStore:
    """``context["task_state_store"]``: per task instance, survives Airflow retries."""

    def __init__(self, **values: Any) -> None:
        self.values = dict(values)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        assert value is not None, "task_state_store.set rejects None"
        self.values[key] = value


class RecordingTI:
    """``context["ti"]``: records XCom pushes."""

    def __init__(self) -> None:
        self.pushed: list[tuple[str, Any]] = []

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, value))


def make_context(store: InMemoryTaskStateStore | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"ti": RecordingTI()}
    if store is not None:
        context["task_state_store"] = store
    return context


@pytest.fixture
def make_operator() -> Iterator[Callable[..., ModalGPUOperator]]:
    """Builds operators with test defaults; closes the Modal clients their hooks opened."""
    built: list[ModalGPUOperator] = []

    def make(**kwargs: Any) -> ModalGPUOperator:
        kwargs = {
            "task_id": "train_fold",
            "app_name": APP,
            "function_name": "echo",
            "poll_interval": POLL,
            **kwargs,
        }
        built.append(operator := ModalGPUOperator(**kwargs))
        return operator

    yield make
    for operator in built:
        hook = operator.__dict__.get("hook")
        if hook is not None and hook._client is not None:
            hook._client.close()


def spawn_count(plane) -> int:
    return len(plane.spawns())


def defer(operator: ModalGPUOperator, context: dict[str, Any]) -> ModalFunctionCallTrigger:
    """Run ``execute`` and return the trigger it deferred to."""
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    assert deferred.value.method_name == "execute_complete"
    assert isinstance(deferred.value.trigger, ModalFunctionCallTrigger)
    return deferred.value.trigger


class TestModalGPUOperatorDefinition:
    def test_template_fields_cover_the_inputs(self):
        assert {"function_kwargs", "gpu", "backend"} <= set(ModalGPUOperator.template_fields)
        assert {"app_name", "function_name", "timeout", "modal_retries"} <= set(
            ModalGPUOperator.template_fields
        )
        assert ModalGPUOperator.template_fields_renderers["function_kwargs"] == "json"

    def test_templated_inputs_render_from_params(self, make_operator):
        operator = make_operator(
            function_kwargs={"fold": "{{ params.fold }}", "steps": 100},
            gpu="{{ params.gpu }}",
            backend="{{ params.backend }}",
        )

        operator.render_template_fields({"params": {"fold": 2, "gpu": "A100-80GB", "backend": "local"}})

        assert operator.function_kwargs == {"fold": "2", "steps": 100}
        assert (operator.gpu, operator.backend) == ("A100-80GB", "local")

    def test_offers_the_modal_call_link(self):
        assert any(isinstance(link, ModalCallLink) for link in ModalGPUOperator.operator_extra_links)

    @pytest.mark.parametrize("poll_interval", [pytest.param(0, id="zero"), pytest.param(-1.0, id="negative")])
    def test_poll_interval_must_be_positive(self, make_operator, poll_interval):
        with pytest.raises(ValueError, match="poll_interval"):
            make_operator(poll_interval=poll_interval)

    def test_function_kwargs_default_to_an_empty_dict(self, make_operator):
        assert make_operator().function_kwargs == {}


class TestModalGPUOperatorResumableJobSeams:
    """The names and signatures of Airflow's ``ResumableJobMixin``, so adopting it later is small."""

    @pytest.mark.parametrize("name", sorted(ResumableJobMixin.__abstractmethods__))
    def test_has_each_mixin_step_with_its_parameters(self, name):
        ours = inspect.signature(getattr(ModalGPUOperator, name))
        theirs = inspect.signature(getattr(ResumableJobMixin, name))

        assert list(ours.parameters) == list(theirs.parameters)

    def test_one_call_id_key_for_task_state_store_xcom_and_the_link(self):
        assert ModalGPUOperator.external_id_key == CALL_ID_KEY == "modal_call_id"

    def test_durable_by_default(self, make_operator):
        assert make_operator().durable is True

    @pytest.mark.parametrize(
        ("status", "active", "succeeded"),
        [("running", True, False), ("success", False, True), ("failed", False, False)],
    )
    def test_status_predicates(self, make_operator, status, active, succeeded):
        operator = make_operator()

        assert (operator.is_job_active(status), operator.is_job_succeeded(status)) == (active, succeeded)

    def test_get_job_result_reuses_the_status_already_seen(self, make_operator, monkeypatch):
        operator = make_operator()
        operator._status = CallStatus("fc-1", "success", result={"fold": 1})
        monkeypatch.setattr(ModalGPUHook, "poll", lambda *a: pytest.fail("no second status check"))

        assert operator.get_job_result("fc-1", make_context()) == {"fold": 1}

    def test_get_job_result_of_a_failed_call_raises(self, make_operator):
        operator = make_operator()
        operator._status = CallStatus("fc-1", "failed", error="RuntimeError: NaN loss")

        with pytest.raises(ModalCallFailed, match=r"fc-1 of fake-app\.echo failed: RuntimeError: NaN loss"):
            operator.get_job_result("fc-1", make_context())


class TestModalGPUOperatorLocalBackend:
    """``backend="local"``: the function body runs in the worker; no Modal, no network."""

    @pytest.mark.parametrize(
        ("local_callable", "kwargs", "expected"),
        [
            pytest.param(
                "tests.fake_modal.functions:echo",
                {"fold": 1, "steps": 5},
                {"fold": 1, "steps": 5},
                id="plain-function",
            ),
            pytest.param("tests.fake_modal.sample_app:add", {"a": 2, "b": 3}, 5, id="app-function-via-local"),
            pytest.param(fake_functions.echo, {"x": [1, 2]}, {"x": [1, 2]}, id="callable"),
        ],
    )
    def test_runs_the_body_in_process(self, make_operator, local_callable, kwargs, expected):
        operator = make_operator(backend="local", local_callable=local_callable, function_kwargs=kwargs)
        context = make_context(InMemoryTaskStateStore())

        assert operator.execute(context) == expected
        assert context["ti"].pushed == []  # no Modal call, no call id
        assert context["task_state_store"].values == {}

    def test_needs_no_modal_connection(self, make_operator, monkeypatch):
        monkeypatch.delenv("AIRFLOW_CONN_MODAL_DEFAULT", raising=False)
        monkeypatch.setenv("MODAL_SERVER_URL", "http://127.0.0.1:9")  # nothing there

        operator = make_operator(
            backend="local",
            local_callable="tests.fake_modal.functions:echo",
            function_kwargs={"k": 1},
            gpu="H100",
        )

        assert operator.execute(make_context()) == {"k": 1}

    @pytest.mark.parametrize(
        ("function_name", "local_callable", "kwargs"),
        [
            pytest.param("echo", "tests.fake_modal.functions:echo", {"fold": 0, "lr": 1e-3}, id="echo"),
            pytest.param(
                "sleep",
                "tests.fake_modal.functions:sleep_then_return",
                {"seconds": 0.1, "value": {"l1": 0.3}},
                id="sleep",
            ),
        ],
    )
    def test_same_result_as_backend_modal_for_the_same_kwargs(
        self, plane, modal_connection, make_operator, function_name, local_callable, kwargs
    ):
        common = {"function_name": function_name, "function_kwargs": kwargs, "local_callable": local_callable}
        on_modal = make_operator(backend="modal", deferrable=False, **common).execute(make_context())
        in_worker = make_operator(backend="local", **common).execute(make_context())

        assert in_worker == on_modal

    def test_app_function_gives_the_same_result_on_both_backends(
        self, plane, modal_connection, make_operator
    ):
        common = {
            "app_name": SAMPLE_APP,
            "function_name": "add",
            "function_kwargs": {"a": 20, "b": 22},
            "local_callable": "tests.fake_modal.sample_app:add",
        }

        on_modal = make_operator(backend="modal", deferrable=False, **common).execute(make_context())
        in_worker = make_operator(backend="local", **common).execute(make_context())

        assert on_modal == in_worker == 42

    @pytest.mark.parametrize(
        "backend", [pytest.param("LOCAL", id="upper"), pytest.param(" local ", id="padded")]
    )
    def test_backend_name_is_normalised(self, make_operator, backend):
        operator = make_operator(backend=backend, local_callable="tests.fake_modal.functions:echo")

        assert operator.execute(make_context()) == {}

    def test_local_backend_needs_local_callable(self, make_operator):
        with pytest.raises(ValueError, match="local_callable"):
            make_operator(backend="local").execute(make_context())

    @pytest.mark.parametrize(
        ("local_callable", "match"),
        [
            pytest.param("tests.fake_modal.functions.echo", "package.module:function", id="no-colon"),
            pytest.param("no_such_module_xyz:train", "cannot import", id="missing-module"),
            pytest.param("tests.fake_modal.functions:nope", "has no 'nope'", id="missing-attribute"),
            pytest.param("scripts.fake_modal.control_plane:TOKEN_ID", "not callable", id="not-callable"),
        ],
    )
    def test_bad_local_callable_raises_value_error(self, make_operator, local_callable, match):
        operator = make_operator(backend="local", local_callable=local_callable)

        with pytest.raises(ValueError, match=match):
            operator.execute(make_context())


class TestModalGPUOperatorInputs:
    @pytest.mark.parametrize(
        "backend",
        [
            pytest.param("gpu", id="unknown"),
            pytest.param("", id="empty"),
            pytest.param("modal-cloud", id="near-miss"),
        ],
    )
    def test_bad_backend_raises_value_error(self, plane, make_operator, backend):
        spawned_before = spawn_count(plane)

        with pytest.raises(ValueError, match="backend must be one of"):
            make_operator(backend=backend).execute(make_context())
        assert spawn_count(plane) == spawned_before

    @pytest.mark.parametrize("backend", ["modal", "local"])
    def test_function_kwargs_must_be_a_dict(self, make_operator, backend):
        operator = make_operator(backend=backend, function_kwargs="{'fold': 1}")  # e.g. a rendered string

        with pytest.raises(TypeError, match="function_kwargs must be a dict"):
            operator.execute(make_context())


@pytest.mark.usefixtures("modal_connection")
class TestModalGPUOperatorDeferrable:
    def test_execute_spawns_once_stores_the_call_and_defers(self, plane, make_operator):
        operator = make_operator(
            function_name="sleep",
            function_kwargs={"seconds": 2.0, "value": "trained"},
            gpu="H100",
            timeout="900",  # rendered templates are strings
            modal_retries="1",
        )
        store = InMemoryTaskStateStore()
        context = make_context(store)
        spawned_before = spawn_count(plane)

        trigger = defer(operator, context)

        call_id = store.get(KEY)
        assert call_id.startswith("fc-")
        assert spawn_count(plane) == spawned_before + 1
        spawn = event_for(plane, "spawn", call_id)
        assert (spawn["function"], spawn["gpu"], spawn["timeout"], spawn["retries"]) == (
            "sleep",
            "H100",
            900,
            1,
        )
        assert context["ti"].pushed == [("modal_call_id", call_id)]
        assert trigger.serialize()[1] == {
            "call_id": call_id,
            "modal_conn_id": "modal_default",
            "poll_interval": POLL,
            "cancel_on_kill": True,
            "first_check_after": DEFER_FIRST_CHECK_S,
            "reattach_on_clear": True,
            "end_from_trigger": True,
            "progress_dict": None,
            "progress_key": None,
            "stall_after_s": 0.0,
        }

    def test_gpu_timeout_and_retries_left_out_keep_the_function_defaults(self, plane, make_operator):
        store = InMemoryTaskStateStore()
        defer(make_operator(timeout="", modal_retries="None"), make_context(store))

        spawn = event_for(plane, "spawn", store.get(KEY))
        assert (spawn["gpu"], spawn["timeout"], spawn["retries"]) == (None, None, None)

    def test_without_task_state_store_it_still_spawns_and_defers(self, plane, make_operator):
        context = make_context(store=None)

        trigger = defer(make_operator(), context)

        assert context["ti"].pushed == [("modal_call_id", trigger.call_id)]
        assert event_for(plane, "spawn", trigger.call_id)

    def test_deferred_call_completes_through_trigger_and_execute_complete(self, plane, make_operator):
        operator = make_operator(
            function_name="sleep", function_kwargs={"seconds": 0.3, "value": {"fold": 4}}
        )
        trigger = defer(operator, make_context(InMemoryTaskStateStore()))

        async def first_event():
            async for event in trigger.run():
                return event

        event = asyncio.run(asyncio.wait_for(first_event(), timeout=DEFER_FIRST_CHECK_S + 10))

        assert operator.execute_complete(make_context(), event.payload) == {"fold": 4}


@pytest.mark.usefixtures("modal_connection")
class TestModalGPUOperatorReattach:
    """An Airflow retry runs ``execute`` again with the same ``task_state_store``."""

    def test_retry_while_the_call_runs_reattaches_instead_of_spawning(self, plane, make_operator):
        kwargs = {"function_name": "sleep", "function_kwargs": {"seconds": 5.0, "value": "slow"}}
        store = InMemoryTaskStateStore()
        first = defer(make_operator(**kwargs), make_context(store))
        spawned_after_first = spawn_count(plane)

        retry_context = make_context(store)
        second = defer(make_operator(**kwargs), retry_context)

        assert spawn_count(plane) == spawned_after_first
        assert second.call_id == first.call_id == store.get(KEY)
        assert retry_context["ti"].pushed == [("modal_call_id", first.call_id)]

    def test_retry_after_the_call_succeeded_returns_its_result_without_spawning(self, plane, make_operator):
        store = InMemoryTaskStateStore()
        trigger = defer(make_operator(function_kwargs={"fold": 3}), make_context(store))
        event_for(plane, "finished", trigger.call_id)
        spawned_before = spawn_count(plane)

        retry_context = make_context(store)
        result = make_operator(function_kwargs={"fold": 3}).execute(retry_context)

        assert result == {"fold": 3}
        assert spawn_count(plane) == spawned_before
        assert retry_context["ti"].pushed == [("modal_call_id", trigger.call_id)]

    def test_retry_after_the_call_failed_spawns_a_new_one(self, plane, make_operator):
        kwargs = {"function_name": "fail", "function_kwargs": {"message": "preempted"}}
        store = InMemoryTaskStateStore()
        failed = defer(make_operator(**kwargs), make_context(store))
        event_for(plane, "finished", failed.call_id)
        spawned_before = spawn_count(plane)

        retry = defer(make_operator(**kwargs), make_context(store))

        assert spawn_count(plane) == spawned_before + 1
        assert retry.call_id != failed.call_id
        assert store.get(KEY) == retry.call_id

    def test_stored_call_unknown_to_modal_is_spawned_anew(self, plane, make_operator):
        store = InMemoryTaskStateStore(**{KEY: "fc-expired-long-ago"})
        spawned_before = spawn_count(plane)

        trigger = defer(make_operator(), make_context(store))

        assert spawn_count(plane) == spawned_before + 1
        assert store.get(KEY) == trigger.call_id != "fc-expired-long-ago"

    def test_retry_that_cannot_reach_modal_does_not_spawn_a_second_call(
        self, plane, make_operator, monkeypatch, tmp_path
    ):
        kwargs = {"function_name": "sleep", "function_kwargs": {"seconds": 5.0, "value": "slow"}}
        store = InMemoryTaskStateStore()
        first = defer(make_operator(**kwargs), make_context(store))
        spawned_after_first = spawn_count(plane)
        offline = unreachable_client(tmp_path)
        retry = make_operator(**kwargs)
        # The status check of the retry cannot reach Modal; spawning would (the network came back).
        monkeypatch.setattr(retry.hook, "_call", lambda cid: modal.FunctionCall.from_id(cid, client=offline))
        try:
            with pytest.raises((modal.exception.ConnectionError, TaskDeferred)):
                retry.execute(make_context(store))
        finally:
            offline.close()

        assert spawn_count(plane) == spawned_after_first
        assert store.get(KEY) == first.call_id


@pytest.mark.usefixtures("modal_connection")
class TestModalGPUOperatorNotDurable:
    """``durable=False``: every try spawns its own call; ``task_state_store`` is left alone."""

    def test_a_retry_spawns_anew_and_the_store_is_not_written(self, plane, make_operator):
        kwargs = {"function_name": "sleep", "function_kwargs": {"seconds": 5.0, "value": "slow"}}
        store = InMemoryTaskStateStore()
        first = defer(make_operator(durable=False, **kwargs), make_context(store))
        spawned_after_first = spawn_count(plane)

        retry = defer(make_operator(durable=False, **kwargs), make_context(store))

        assert spawn_count(plane) == spawned_after_first + 1
        assert retry.call_id != first.call_id
        assert store.values == {}

    def test_a_stored_call_is_not_read(self, plane, make_operator):
        store = InMemoryTaskStateStore(**{KEY: "fc-from-a-durable-try"})

        trigger = defer(make_operator(durable=False), make_context(store))

        assert trigger.call_id != "fc-from-a-durable-try"
        assert store.get(KEY) == "fc-from-a-durable-try"

    def test_the_trigger_cancels_on_a_clear_as_no_try_would_reattach(self, plane, make_operator):
        durable = defer(make_operator(), make_context(InMemoryTaskStateStore()))
        not_durable = defer(make_operator(durable=False), make_context(InMemoryTaskStateStore()))

        assert (durable.reattach_on_clear, not_durable.reattach_on_clear) == (True, False)


class TestModalGPUOperatorExecuteComplete:
    def test_success_event_returns_the_result(self, make_operator):
        event = {"status": "success", "call_id": "fc-1", "result": {"val_l1": 0.2}}

        assert make_operator().execute_complete(make_context(), event) == {"val_l1": 0.2}

    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            pytest.param(
                {"status": "error", "call_id": "fc-9", "message": "RuntimeError: fold 2 diverged"},
                "Modal call fc-9 of fake-app.echo failed: RuntimeError: fold 2 diverged",
                id="remote-error",
            ),
            pytest.param(
                {"status": "error", "call_id": "fc-9"},
                "Modal call fc-9 of fake-app.echo failed: unknown error",
                id="no-message",
            ),
        ],
    )
    def test_error_event_raises_modal_call_failed_with_the_remote_message(
        self, make_operator, event, expected
    ):
        with pytest.raises(ModalCallFailed) as failed:
            make_operator().execute_complete(make_context(), event)

        assert str(failed.value) == expected


@pytest.mark.usefixtures("modal_connection")
class TestModalGPUOperatorPolling:
    """``deferrable=False``: wait in the worker (deployments without a triggerer)."""

    def test_polls_to_completion_and_returns_the_result(self, plane, make_operator):
        store = InMemoryTaskStateStore()
        context = make_context(store)
        operator = make_operator(
            deferrable=False, function_name="sleep", function_kwargs={"seconds": 0.5, "value": {"fold": 0}}
        )

        assert operator.execute(context) == {"fold": 0}
        assert context["ti"].pushed == [("modal_call_id", store.get(KEY))]

    def test_retry_reattaches_to_the_running_call_and_polls_it(self, plane, make_operator):
        kwargs = {"function_name": "sleep", "function_kwargs": {"seconds": 1.0, "value": "trained"}}
        store = InMemoryTaskStateStore()
        first = defer(make_operator(**kwargs), make_context(store))  # e.g. the worker died after this
        spawned_after_first = spawn_count(plane)

        retry_context = make_context(store)
        result = make_operator(deferrable=False, **kwargs).execute(retry_context)

        assert result == "trained"
        assert spawn_count(plane) == spawned_after_first
        assert retry_context["ti"].pushed == [("modal_call_id", first.call_id)]

    def test_short_calls_are_checked_with_back_off_from_half_a_second(
        self, plane, make_operator, monkeypatch
    ):
        waited: list[tuple[float, float]] = []
        real_wait = ModalGPUHook.wait

        def recording_wait(self, call_id, poll_interval, **kwargs):
            waited.append((poll_interval, kwargs.get("first_delay", 0.5)))
            return real_wait(self, call_id, poll_interval, **kwargs)

        monkeypatch.setattr(ModalGPUHook, "wait", recording_wait)
        operator = make_operator(deferrable=False, poll_interval=10.0, function_kwargs={"x": 1})

        started = time.monotonic()
        assert operator.execute(make_context()) == {"x": 1}

        assert waited == [(10.0, 0.5)]
        assert time.monotonic() - started < 5  # not a whole 10 s interval

    def test_remote_failure_raises_modal_call_failed(self, plane, make_operator):
        operator = make_operator(
            deferrable=False, function_name="fail", function_kwargs={"message": "NaN loss"}
        )

        with pytest.raises(ModalCallFailed, match="RuntimeError: NaN loss"):
            operator.execute(make_context())

    def test_keeps_polling_while_modal_is_briefly_unreachable(
        self, plane, make_operator, monkeypatch, tmp_path
    ):
        operator = make_operator(
            deferrable=False, function_name="sleep", function_kwargs={"seconds": 0.5, "value": "done"}
        )
        offline = unreachable_client(tmp_path)
        real_call = operator.hook._call
        polls: list[str] = []

        def flaky_call(cid: str) -> modal.FunctionCall:
            polls.append(cid)
            if len(polls) <= 2:  # the first two status checks cannot reach Modal
                return modal.FunctionCall.from_id(cid, client=offline)
            return real_call(cid)

        monkeypatch.setattr(operator.hook, "_call", flaky_call)
        try:
            assert operator.execute(make_context()) == "done"
        finally:
            offline.close()

    def test_on_kill_cancels_the_running_call_and_execute_fails(self, plane, make_operator):
        operator = make_operator(
            deferrable=False, function_name="sleep", function_kwargs={"seconds": 30.0, "value": None}
        )
        context = make_context(InMemoryTaskStateStore())
        outcome: dict[str, BaseException | Any] = {}

        def run() -> None:
            try:
                outcome["result"] = operator.execute(context)
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        # The call id reaches XCom once the spawn returned: from then on on_kill knows what to cancel.
        (_, call_id) = plane.wait_for(lambda: next(iter(context["ti"].pushed), None))
        event_for(plane, "spawn", call_id)

        operator.on_kill()
        worker.join(timeout=10)

        assert not worker.is_alive()
        assert event_for(plane, "cancel", call_id)
        assert event_for(plane, "finished", call_id)["status"] == "cancelled"
        assert isinstance(outcome.get("error"), ModalCallFailed)
        assert call_id in str(outcome["error"])


class TestModalGPUOperatorOnKill:
    @pytest.mark.parametrize(
        ("state", "cancelled"),
        [
            pytest.param("up_for_retry", False, id="airflow-retries-it"),
            pytest.param("running", False, id="the-next-try-already-runs"),
            pytest.param("restarting", False, id="cleared"),
            pytest.param("failed", True, id="marked-failed"),
            pytest.param("success", True, id="marked-success"),
            pytest.param("unknown", True, id="state-unreadable"),
        ],
    )
    def test_a_stored_call_is_left_running_when_another_try_comes(
        self, plane, modal_connection, make_operator, monkeypatch, state, cancelled
    ):
        """Seen in the fan-out benchmark at k=64 on Celery: the call id's XCom push timed out after the
        spawn, Airflow started the next try and stopped this one, and on_kill cancelled the call that
        try would have re-attached to, so the fold was paid twice."""
        operator = make_operator(
            deferrable=False, function_name="sleep", function_kwargs={"seconds": 30.0, "value": None}
        )
        context = make_context(InMemoryTaskStateStore())
        operator._ti = context["ti"]
        call_id, _ = operator._resume_or_submit(context)  # spawned, and stored for the next try
        monkeypatch.setattr("modal_gpu.task_state.read", lambda ti, log: state)

        operator.on_kill()

        if cancelled:
            assert event_for(plane, "cancel", call_id)
        else:
            time.sleep(0.3)
            assert events_of(plane, "cancel", call_id) == []
            operator.hook.cancel(call_id)  # the test's own clean-up

    def test_on_kill_before_any_spawn_does_nothing(self, make_operator, monkeypatch):
        operator = make_operator()
        monkeypatch.setattr(ModalGPUHook, "cancel", lambda *a, **k: pytest.fail("nothing to cancel"))

        operator.on_kill()

    def test_on_kill_of_the_local_backend_does_not_touch_modal(self, make_operator, monkeypatch):
        operator = make_operator(backend="local", local_callable="tests.fake_modal.functions:echo")
        operator.execute(make_context())
        monkeypatch.setattr(ModalGPUHook, "cancel", lambda *a, **k: pytest.fail("nothing to cancel"))

        operator.on_kill()

    def test_on_kill_after_deferring_leaves_the_call_to_the_trigger(
        self, plane, modal_connection, make_operator
    ):
        """Once deferred, the call is the trigger's: the worker process may still be killed while it exits
        (seen under load in the fan-out benchmark), and that must not cancel the GPU job the trigger waits
        on. User actions on the deferred task reach the trigger's on_kill instead."""
        operator = make_operator(function_name="sleep", function_kwargs={"seconds": 30.0, "value": None})
        trigger = defer(operator, make_context(InMemoryTaskStateStore()))

        operator.on_kill()

        time.sleep(0.5)
        assert events_of(plane, "cancel", trigger.call_id) == []
