"""``ModalGPUOperator``: one call of a deployed Modal function per task instance, GPU and all.

What it adds over calling Modal from a ``@task``:

- **Deferrable**: after spawning, the task defers to ``ModalFunctionCallTrigger``, so no worker slot is
  held while the GPU trains; ``execute_complete`` returns the call's result to XCom, or fails the task
  with the remote error. ``deferrable=False`` polls in the worker instead (no triggerer needed).
- **Re-attach** (``durable=True``, the default): the call id is kept in the task instance's
  ``task_state_store``. An Airflow retry (or a worker that died) finds it there: a call still running is
  waited on instead of paying for a second GPU job, a call that already succeeded gives its result, a
  failed one is spawned anew. On both paths: the decision is made in ``execute``, before deferring.
- **Cancel**: ``on_kill`` (polling mode) and the trigger's ``on_kill`` (deferred) cancel the call when a
  user marks the task failed or success. When the task instance's state says another try comes (a
  clear, or Airflow stopping the task itself: a lost heartbeat, a report that timed out under load), a
  ``durable`` call is left running for that try to re-attach to (``task_state``).
- **Visible**: the call id goes to XCom (``modal_call_id``) and to an extra link to Modal's dashboard.
  With ``progress_dict``/``progress_key`` the job's published progress is logged into the task's log
  while it waits (by the trigger when deferred), with a warning when it stalls (``stall_after_s``).
- **Turns within a run** (``run_concurrency``): at most that many mapped instances of one DAG run hold a
  call at once, lowest map index first. One that must wait *reschedules* itself (``up_for_reschedule``)
  instead of deferring: Airflow 3.3 counts deferred instances toward ``max_active_tis_per_dagrun``, so
  instances deferred while waiting for a turn could fill every slot while the instances they wait for
  sit in ``up_for_retry`` and can never come back, a deadlock. A rescheduled instance holds no slot of
  any kind; an instance in ``up_for_retry`` keeps its turn (its call may still run, and its retry
  re-attaches). Across runs and DAGs, cap calls with an Airflow pool (``pool=``, ``include_deferred``).
- **Local backend**: ``backend="local"`` runs the function's body in the worker (see ``local``): same
  inputs, same result, no Modal account or network.

The remote-job steps carry the names of Airflow's ``ResumableJobMixin`` (AIP-103): ``external_id_key``,
``durable``, ``submit_job``, ``get_job_status``, ``is_job_active``, ``is_job_succeeded``,
``poll_until_complete`` and ``get_job_result``, with its signatures. The mixin is not used yet: in Airflow
3.3.2 its ``execute_resumable`` covers only the polling path (no defer between the resume decision and
the wait). When it covers deferring, the class can take the mixin as a base and ``execute`` can call
``execute_resumable``; the steps below are already what it calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowRescheduleException

from modal_gpu import task_state
from modal_gpu.hooks import CallStatus, ModalGPUHook, ProgressChannel
from modal_gpu.links import CALL_ID_KEY, DEFAULT_DASHBOARD_URL_TEMPLATE, ModalCallLink
from modal_gpu.local import resolve_callable
from modal_gpu.triggers import ModalFunctionCallTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

BACKENDS = ("modal", "local")
# The trigger's first status check waits this long after deferring. Airflow 3.3 fails a deferred task
# whose trigger fires while the deferring worker process is still exiting (a stale executor "success"
# for the same try: apache/airflow#71580, #72716); a call that finishes within seconds of its spawn
# would hit that race. GPU jobs run minutes, so the wait costs nothing that matters.
DEFER_FIRST_CHECK_S = 10.0
# The same race hits a task that reschedules itself: the executor's late "success" for the try that
# rescheduled must arrive while the instance still waits (up_for_reschedule), not once it is scheduled
# again, or the scheduler fails it as killed externally (seen 6 s late on a loaded 2-core machine).
RESCHEDULE_MIN_S = 15.0


def plain_data(value: Any) -> Any:
    """Mappings become dicts and sequences lists, recursively (what Modal pickles and XCom stores)."""
    if isinstance(value, Mapping):
        return {key: plain_data(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain_data(item) for item in value]
    return value


def _optional_int(value: Any) -> int | None:
    """A rendered template's integer (``"3"`` -> 3); None for None, empty or ``"None"``."""
    return None if value in (None, "", "None") else int(value)


def _optional_float(value: Any) -> float | None:
    return None if value in (None, "", "None") else float(value)


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
    :param durable: keep the call id in ``task_state_store`` and re-attach to it on a retry (default).
        ``False`` spawns a new call on every try and leaves the store alone (``ResumableJobMixin``'s
        flag of the same name).
    :param poll_interval: seconds between status checks.
    :param dashboard_url_template: extra-link URL, formatted with ``call_id``.
    :param first_check_after: seconds from deferring to the trigger's first status check; default
        ``max(poll_interval, DEFER_FIRST_CHECK_S)`` (see that constant for why).
    :param end_from_trigger: a deferred call that succeeds ends the task in the triggerer, its result
        the ``return_value`` XCom, instead of starting the task again in a worker (default; not under
        ``dag.test()``, see ``ModalFunctionCallTrigger``).
    :param progress_dict: name of a ``modal.Dict`` the function publishes its progress to.
    :param progress_key: the call's key in it (templated); without both, no progress is read.
    :param stall_after_s: warn in the log when the progress has not changed for this many seconds
        (templated; 0 or None: never). The call is not stopped.
    :param run_concurrency: at most this many mapped instances of this task in one DAG run hold a call (or
        run the local body) at once, lowest map index first (templated; 0 or None: no limit beyond
        ``max_active_tis_per_dagrun``). See the module for why waiting instances reschedule.
    :param turn_wait_s: seconds between an instance's checks for its turn (at least ``RESCHEDULE_MIN_S``).
    """

    template_fields: Sequence[str] = (
        "app_name",
        "function_name",
        "function_kwargs",
        "gpu",
        "timeout",
        "modal_retries",
        "backend",
        "progress_key",
        "stall_after_s",
        "run_concurrency",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"function_kwargs": "json"}
    operator_extra_links = (ModalCallLink(),)
    ui_color = "#7fee64"
    # The one key of the call id: in task_state_store (re-attach), in XCom and for the extra link.
    # Renaming it breaks re-attach for tasks in flight: their retries look under the old key.
    external_id_key: ClassVar[str] = CALL_ID_KEY

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
        durable: bool = True,
        poll_interval: float = 10.0,
        dashboard_url_template: str = DEFAULT_DASHBOARD_URL_TEMPLATE,
        first_check_after: float | None = None,
        end_from_trigger: bool = True,
        progress_dict: str | None = None,
        progress_key: str | None = None,
        stall_after_s: float | str | None = None,
        run_concurrency: int | str | None = None,
        turn_wait_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.progress_dict = progress_dict
        self.progress_key = progress_key
        self.stall_after_s = stall_after_s
        self.run_concurrency = run_concurrency
        if not turn_wait_s >= RESCHEDULE_MIN_S:
            raise ValueError(
                f"turn_wait_s must be at least {RESCHEDULE_MIN_S} s, got {turn_wait_s!r}: a task rescheduled "
                "sooner can be failed by Airflow 3.3's stale executor event (see RESCHEDULE_MIN_S)"
            )
        self.turn_wait_s = turn_wait_s
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
        self.durable = durable
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        self.poll_interval = poll_interval
        self.dashboard_url_template = dashboard_url_template
        self.first_check_after = first_check_after
        self.end_from_trigger = end_from_trigger
        # The call on_kill cancels: set from the spawn (or re-attach) until the call is the trigger's.
        self._call_id: str | None = None
        # The last status seen, so a call found finished gives its result without another round trip.
        self._status: CallStatus | None = None
        # The call id is in task_state_store (a next try re-attaches), and the task instance to ask.
        self._persisted = False
        self._ti: Any = None

    @cached_property
    def hook(self) -> ModalGPUHook:
        return ModalGPUHook(modal_conn_id=self.modal_conn_id)

    # ---------------------------------------------------------------- execute

    def execute(self, context: Context) -> Any:
        self._ti = context.get("ti")
        if self._prepare_inputs() == "local":
            self._wait_for_turn(context)
            return self._execute_local()
        call_id, succeeded = self._resume_or_submit(context)
        self._publish(context, call_id)
        if succeeded:
            return self.get_job_result(call_id, context)
        if self.deferrable:
            self._defer(call_id)  # raises TaskDeferred: execute_complete takes over
        self.poll_until_complete(call_id, context)
        return self.get_job_result(call_id, context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger fired: the call's result, or the remote error as a task failure."""
        call_id = event.get("call_id")
        if event.get("status") == "success":
            self.log.info("Modal call %s succeeded", call_id)
            return event.get("result")
        raise ModalCallFailed(self._failure_message(call_id, event.get("message")))

    def on_kill(self) -> None:
        if not self._call_id or self._backend() != "modal":
            return
        if self._persisted:
            state = task_state.read(self._ti, self.log)
            if task_state.someone_comes_back(state):
                self.log.info(
                    "Task stopped by Airflow, not by a user (state %s): leaving Modal call %s running for "
                    "the next try to re-attach",
                    state,
                    self._call_id,
                )
                return
        self.log.info("Task killed: cancelling Modal call %s", self._call_id)
        self.hook.cancel(self._call_id)

    # ------------------------------------------- remote-job steps (ResumableJobMixin's names)

    def submit_job(self, context: Context) -> str:
        """Spawn the call and return its id. Persisting the id is the caller's (as in the mixin)."""
        timeout = _optional_int(self.timeout)
        retries = _optional_int(self.modal_retries)
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
        return call_id

    def get_job_status(self, external_id: str, context: Context) -> str:
        """The call's state now (``running``, ``success`` or ``failed``), without waiting.

        Modal being unreachable raises: a retry that cannot tell whether its call still runs must not
        spawn a second GPU job. The full status (result, error) is kept for ``get_job_result``.
        """
        self._status = self.hook.poll(external_id)
        return self._status.state

    def is_job_active(self, status: str) -> bool:
        """Still running, so a retry re-attaches to it."""
        return status == "running"

    def is_job_succeeded(self, status: str) -> bool:
        return status == "success"

    def poll_until_complete(self, external_id: str, context: Context) -> Any:
        """Wait in the worker (the hook's polling loop) until the call finishes; raise if it failed.

        Returns the result as well: 3.3.2's ``execute_resumable`` returns this method's value when it
        re-attaches to a running job (and ``get_job_result``'s otherwise).
        """
        self._status = self.hook.wait(
            external_id, self.poll_interval, log=self.log, progress=self._progress_channel()
        )
        if self._status.state != "success":
            raise ModalCallFailed(self._failure_message(external_id, self._status.error))
        return self._status.result

    def get_job_result(self, external_id: str, context: Context) -> Any:
        """The finished call's result: from the status already seen, else from one more check."""
        status = self._status
        if status is None or status.call_id != external_id or not status.done:
            status = self._status = self.hook.poll(external_id)
        if status.state != "success":
            raise ModalCallFailed(self._failure_message(external_id, status.error))
        return status.result

    # ---------------------------------------------------------------- helpers

    def _backend(self) -> str:
        return str(self.backend).strip().lower()

    def _prepare_inputs(self) -> str:
        """Check the rendered inputs; return the backend. Both backends get the same plain kwargs."""
        backend = self._backend()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.function_kwargs, Mapping):
            raise TypeError(f"function_kwargs must be a dict, got {type(self.function_kwargs).__name__}")
        # Plain data on both backends: Airflow hands mapped upstream results over as lazy sequences.
        self.function_kwargs = plain_data(self.function_kwargs)
        return backend

    def _resume_or_submit(self, context: Context) -> tuple[str, bool]:
        """The mixin's resume decision: ``(call id, already succeeded)``.

        A stored call still running is re-attached to, a succeeded one reused; a failed (or unknown)
        one, or none, means a new spawn, whose id is stored before anything waits on it.
        """
        previous = self._stored_call_id(context)
        if previous is not None:
            status = self.get_job_status(previous, context)
            if self.is_job_active(status):
                self.log.info("Re-attaching to Modal call %s, still running (no new spawn)", previous)
                self._persisted = True
                return previous, False
            if self.is_job_succeeded(status):
                self.log.info("Modal call %s already succeeded; reusing its result", previous)
                return previous, True
            error = self._status.error if self._status else None
            self.log.warning("Previous Modal call %s failed (%s); spawning a new one", previous, error)
        self._wait_for_turn(context)  # a new spawn waits for its turn; a re-attach already has one
        call_id = self.submit_job(context)
        self._persist_call_id(context, call_id)
        return call_id, False

    def _wait_for_turn(self, context: Context) -> None:
        """Reschedule while ``run_concurrency`` lower-indexed instances of this run are unfinished."""
        limit = _optional_int(self.run_concurrency)
        ti = context["ti"]
        map_index = getattr(ti, "map_index", None)
        if not limit or map_index is None or map_index < 0:
            return
        cap = self.max_active_tis_per_dagrun
        if cap is not None and limit >= cap:
            return  # Airflow's own per-run limit holds it, and waiting there costs no process start
        ahead = self._unfinished_before(ti)
        if ahead is None or len(ahead) < limit:
            return
        self.log.info(
            "Waiting for a turn: %d instances of this run ahead of this one are unfinished (map indexes %s; "
            "at most %d at once). Checking again in %.0f s, holding no worker or run slot meanwhile.",
            len(ahead),
            ahead,
            limit,
            self.turn_wait_s,
        )
        raise AirflowRescheduleException(datetime.now(UTC) + timedelta(seconds=self.turn_wait_s))

    def _unfinished_before(self, ti: Any) -> list[int] | None:
        """Map indexes below this one whose instances of this run are not finished; None if unknown."""
        try:
            states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id])
        except Exception as exc:  # e.g. no supervisor to ask (a unit test): do not hold the task back
            self.log.warning("Could not read this run's task states (%s); not waiting for a turn", exc)
            return None
        prefix = f"{ti.task_id}_"
        ahead = []
        for key, state in states.get(ti.run_id, {}).items():
            index = key[len(prefix) :] if key.startswith(prefix) else ""
            finished = str(getattr(state, "value", state)) in task_state.FINISHED_STATES
            if index.isdigit() and int(index) < ti.map_index and not finished:
                ahead.append(int(index))
        return sorted(ahead)

    def _progress_channel(self) -> ProgressChannel | None:
        if not self.progress_dict or not self.progress_key or self.progress_key in ("None", ""):
            return None
        stall = _optional_float(self.stall_after_s) or 0.0
        return ProgressChannel(self.progress_dict, str(self.progress_key), stall)

    def _stored_call_id(self, context: Context) -> str | None:
        store = context.get("task_state_store")
        if not self.durable or store is None:
            return None
        value = store.get(self.external_id_key)
        return str(value) if value else None

    def _persist_call_id(self, context: Context, call_id: str) -> None:
        if not self.durable:
            return
        store = context.get("task_state_store")
        if store is None:
            self.log.warning("task_state_store unavailable: an Airflow retry will spawn a new call")
            return
        store.set(self.external_id_key, call_id)
        self._persisted = True

    def _publish(self, context: Context, call_id: str) -> None:
        """Make the call visible (XCom for the extra link, the dashboard URL in the log) and killable."""
        self._call_id = call_id
        context["ti"].xcom_push(key=self.external_id_key, value=call_id)
        self.log.info("Modal dashboard: %s", self.dashboard_url_template.format(call_id=call_id))

    def _defer(self, call_id: str) -> None:
        # From here the call is the trigger's: a user action on the deferred task reaches the trigger's
        # on_kill, which knows a clear from a mark-failed. This process may still be killed while it exits
        # after deferring (e.g. a status report that timed out under load); its on_kill must not cancel
        # the GPU job the trigger is waiting on.
        self._call_id = None
        first_check_after = self.first_check_after
        if first_check_after is None:
            first_check_after = max(self.poll_interval, DEFER_FIRST_CHECK_S)
        progress = self._progress_channel()
        self.defer(
            trigger=ModalFunctionCallTrigger(
                call_id=call_id,
                modal_conn_id=self.modal_conn_id,
                poll_interval=self.poll_interval,
                first_check_after=first_check_after,
                reattach_on_clear=self.durable,
                end_from_trigger=self.end_from_trigger,
                progress_dict=None if progress is None else progress.dict_name,
                progress_key=None if progress is None else progress.key,
                stall_after_s=0.0 if progress is None else progress.stall_after_s,
            ),
            method_name="execute_complete",
        )

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

    def _failure_message(self, call_id: str | None, error: str | None) -> str:
        return (
            f"Modal call {call_id} of {self.app_name}.{self.function_name} failed: {error or 'unknown error'}"
        )
