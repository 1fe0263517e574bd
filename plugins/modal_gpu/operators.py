"""``ModalGPUOperator``: one call of a deployed Modal function per task instance, GPU and all.

What it adds over calling Modal from a ``@task``:

- **Deferrable**: after spawning, the task defers to ``ModalFunctionCallTrigger``, so no worker slot is
  held while the GPU trains; ``execute_complete`` returns the call's result to XCom, or fails the task
  with the remote error. ``deferrable=False`` polls in the worker instead (no triggerer needed).
- **Re-attach**: the call id is kept in the task instance's ``task_state_store``. An Airflow retry (or a
  worker that died) finds it there: a call still running is waited on instead of paying for a second
  GPU job, a call that already succeeded gives its result, a failed one is spawned anew.
- **Cancel**: ``on_kill`` (polling mode) and the trigger's ``on_kill`` (deferred) cancel the call when a
  user marks the task failed or success, or clears it.
- **Visible**: the call id goes to XCom (``modal_call_id``) and to an extra link to Modal's dashboard.
- **Local backend**: ``backend="local"`` runs the function's body in the worker (see ``local``): same
  inputs, same result, no Modal account or network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator

from modal_gpu.hooks import UNREACHABLE_ERRORS, CallStatus, ModalGPUHook
from modal_gpu.links import CALL_ID_XCOM_KEY, DEFAULT_DASHBOARD_URL_TEMPLATE, ModalCallLink
from modal_gpu.local import resolve_callable
from modal_gpu.triggers import UNREACHABLE_GRACE_S, ModalFunctionCallTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

BACKENDS = ("modal", "local")
# The trigger's first status check waits this long after deferring. Airflow 3.3 fails a deferred task
# whose trigger fires while the deferring worker process is still exiting (a stale executor "success"
# for the same try: apache/airflow#71580, #72716); a call that finishes within seconds of its spawn
# would hit that race. GPU jobs run minutes, so the wait costs nothing that matters.
DEFER_FIRST_CHECK_S = 10.0
# task_state_store key of the current call. Renaming it breaks re-attach for tasks in flight.
STATE_KEY = "modal_call_id"


def plain_data(value: Any) -> Any:
    """Mappings become dicts and sequences lists, recursively (what Modal pickles and XCom stores)."""
    if isinstance(value, Mapping):
        return {key: plain_data(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain_data(item) for item in value]
    return value


class ModalCallFailed(AirflowException):
    """The Modal call raised, timed out or was cancelled; the message carries the remote error."""


class ModalGPUOperator(BaseOperator):
    """Run one call of a deployed Modal function and return its result.

    :param app_name: name of the deployed Modal app.
    :param function_name: function within the app.
    :param function_kwargs: keyword arguments of the call (JSON-ready; templated).
    :param gpu: GPU request for this call, e.g. ``"H100"``, ``"A10G:2"``; ``None`` keeps the function's
        default. Templated.
    :param timeout: the call's timeout in seconds on Modal; ``None`` keeps the function's default.
    :param modal_retries: Modal's own retries of the call (in new containers), ``None`` keeps the
        function's default. Airflow's ``retries`` keeps its meaning; an Airflow retry re-attaches.
    :param backend: ``"modal"`` or ``"local"`` (run the body here). Templated, so a DAG param can pick.
    :param local_callable: the function for the local backend, as ``"package.module:function"`` (a
        ``@app.function`` is run through its ``.local()``) or a callable.
    :param modal_conn_id: Airflow connection of type ``modal`` with the token id and secret.
    :param deferrable: wait in the triggerer (default) instead of polling in the worker.
    :param poll_interval: seconds between status checks.
    :param dashboard_url_template: extra-link URL, formatted with ``call_id``.
    :param first_check_after: seconds from deferring to the trigger's first status check; default
        ``max(poll_interval, DEFER_FIRST_CHECK_S)`` (see that constant for why).
    """

    template_fields: Sequence[str] = (
        "app_name",
        "function_name",
        "function_kwargs",
        "gpu",
        "timeout",
        "modal_retries",
        "backend",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"function_kwargs": "json"}
    operator_extra_links = (ModalCallLink(),)
    ui_color = "#7fee64"

    def __init__(
        self,
        *,
        app_name: str,
        function_name: str,
        function_kwargs: dict[str, Any] | None = None,
        gpu: str | None = None,
        timeout: int | str | None = None,
        modal_retries: int | str | None = None,
        backend: str = "modal",
        local_callable: str | Callable[..., Any] | None = None,
        modal_conn_id: str | None = ModalGPUHook.default_conn_name,
        deferrable: bool = True,
        poll_interval: float = 10.0,
        dashboard_url_template: str = DEFAULT_DASHBOARD_URL_TEMPLATE,
        first_check_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.app_name = app_name
        self.function_name = function_name
        self.function_kwargs = function_kwargs or {}
        self.gpu = gpu
        self.timeout = timeout
        self.modal_retries = modal_retries
        self.backend = backend
        self.local_callable = local_callable
        self.modal_conn_id = modal_conn_id
        self.deferrable = deferrable
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        self.poll_interval = poll_interval
        self.dashboard_url_template = dashboard_url_template
        self.first_check_after = first_check_after
        self._call_id: str | None = None

    @cached_property
    def hook(self) -> ModalGPUHook:
        return ModalGPUHook(modal_conn_id=self.modal_conn_id)

    # ---------------------------------------------------------------- execute

    def execute(self, context: Context) -> Any:
        backend = str(self.backend).strip().lower()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.function_kwargs, Mapping):
            raise TypeError(f"function_kwargs must be a dict, got {type(self.function_kwargs).__name__}")
        # Plain data on both backends: Airflow hands mapped upstream results over as lazy sequences.
        self.function_kwargs = plain_data(self.function_kwargs)
        if backend == "local":
            return self._execute_local()

        store = context.get("task_state_store")
        previous = self._stored_call(store)
        if previous is not None:
            status = self.hook.poll(previous)
            if status.state == "running":
                self.log.info("Re-attaching to Modal call %s, still running (no new spawn)", previous)
                call_id = previous
            elif status.state == "success":
                self.log.info("Modal call %s already succeeded; reusing its result", previous)
                self._remember(context, previous)
                return status.result
            else:
                self.log.warning(
                    "Previous Modal call %s failed (%s); spawning a new one", previous, status.error
                )
                call_id = self._spawn(store)
        else:
            call_id = self._spawn(store)
        self._remember(context, call_id)

        if self.deferrable:
            # From here the call is the trigger's: a user action on the deferred task reaches the
            # trigger's on_kill, which knows a clear from a mark-failed. This process may still be killed
            # while it exits after deferring (e.g. a status report that timed out under load); its
            # on_kill must not cancel the GPU job the trigger is waiting on.
            self._call_id = None
            self.defer(
                trigger=ModalFunctionCallTrigger(
                    call_id=call_id,
                    modal_conn_id=self.modal_conn_id,
                    poll_interval=self.poll_interval,
                    first_check_after=(
                        max(self.poll_interval, DEFER_FIRST_CHECK_S)
                        if self.first_check_after is None
                        else self.first_check_after
                    ),
                ),
                method_name="execute_complete",
            )
        return self._wait(call_id)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger fired: the call's result, or the remote error as a task failure."""
        call_id = event.get("call_id")
        if event.get("status") == "success":
            self.log.info("Modal call %s succeeded", call_id)
            return event.get("result")
        raise ModalCallFailed(self._failure_message(call_id, event.get("message")))

    def on_kill(self) -> None:
        if self._call_id and str(self.backend).strip().lower() == "modal":
            self.log.info("Task killed: cancelling Modal call %s", self._call_id)
            self.hook.cancel(self._call_id)

    # ---------------------------------------------------------------- helpers

    def _execute_local(self) -> Any:
        if self.local_callable is None:
            raise ValueError(
                f"backend 'local' needs local_callable (the body of {self.app_name}.{self.function_name} "
                "as 'package.module:function')"
            )
        body = resolve_callable(self.local_callable)
        if self.gpu:
            self.log.info("backend local: the GPU request %r does not apply in the worker", self.gpu)
        self.log.info("backend local: running %s.%s in this worker", self.app_name, self.function_name)
        return body(**self.function_kwargs)

    def _spawn(self, store: Any) -> str:
        timeout = int(self.timeout) if self.timeout not in (None, "", "None") else None
        retries = int(self.modal_retries) if self.modal_retries not in (None, "", "None") else None
        call_id = self.hook.spawn(
            self.app_name,
            self.function_name,
            self.function_kwargs,
            gpu=self.gpu or None,
            timeout=timeout,
            retries=retries,
        )
        self.log.info(
            "Spawned Modal call %s: %s.%s (gpu=%s, timeout=%s, modal retries=%s)",
            call_id,
            self.app_name,
            self.function_name,
            self.gpu or "function default",
            timeout or "function default",
            "function default" if retries is None else retries,
        )
        self._call_id = call_id  # on_kill can cancel it from here on
        if store is not None:
            store.set(STATE_KEY, call_id)
        else:
            self.log.warning("task_state_store unavailable: an Airflow retry will spawn a new call")
        return call_id

    def _stored_call(self, store: Any) -> str | None:
        if store is None:
            return None
        value = store.get(STATE_KEY)
        return str(value) if value else None

    def _remember(self, context: Context, call_id: str) -> None:
        self._call_id = call_id
        context["ti"].xcom_push(key=CALL_ID_XCOM_KEY, value=call_id)
        self.log.info("Modal dashboard: %s", self.dashboard_url_template.format(call_id=call_id))

    def _wait(self, call_id: str) -> Any:
        started = time.monotonic()
        next_note = started + 60
        unreachable_since: float | None = None
        polls = 0
        while True:
            try:
                status: CallStatus = self.hook.poll(call_id)
            except UNREACHABLE_ERRORS as exc:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_GRACE_S:
                    raise
                self.log.warning("Modal unreachable (%s); checking call %s again", exc, call_id)
                time.sleep(self.poll_interval)
                continue
            unreachable_since = None
            if status.state == "success":
                return status.result
            if status.state == "failed":
                raise ModalCallFailed(self._failure_message(call_id, status.error))
            now = time.monotonic()
            if now >= next_note:
                self.log.info("Modal call %s still running (%.0f s)", call_id, now - started)
                next_note = now + 300
            # Short calls (a dataset check, an aggregation) should not wait a whole interval: back off
            # from 0.5 s up to poll_interval.
            time.sleep(min(self.poll_interval, 0.5 * 2 ** min(polls, 10)))
            polls += 1

    def _failure_message(self, call_id: str | None, error: str | None) -> str:
        return (
            f"Modal call {call_id} of {self.app_name}.{self.function_name} failed: {error or 'unknown error'}"
        )
