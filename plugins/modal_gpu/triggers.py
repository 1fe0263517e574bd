"""``ModalFunctionCallTrigger``: waits on a Modal function call in the triggerer, without a worker slot.

The trigger holds only the call id and settings (it is serialized into the metadata database), waits
with the hook's async polling loop (``ModalGPUHook.await_done``: ``get(timeout=0)`` checks and
``asyncio.sleep``, so the triggerer's event loop never blocks), and fires once: success with the call's
result, or error with the remote exception's type and message. With a progress channel (a ``modal.Dict``
name and key) it logs what the job publishes there while it waits, and warns when that stops changing:
the trigger's log is part of the deferred task's log, so the progress is read where the task is watched.

**A success ends the task in the triggerer** (``end_from_trigger``): the trigger stores the result as
the task's ``return_value`` XCom and fires Airflow's ``TaskSuccessEvent``, so no worker has to start
again only to return the result (at k=64 folds a burst of 64 task start-ups at the end of every run,
docs/benchmarks.md, section 4). The XCom goes through the triggerer's execution-API channel, serialized
by the XCom backend exactly as a worker's return value is; the event's own ``xcoms`` are not used: in
Airflow 3.3.2 the triggerer stores them JSON-encoded a second time, and readers get a string. Only in a
real triggerer (it sets ``task_instance``): ``dag.test()`` runs the trigger inline and resumes the task
with the event's payload alone, so there the task resumes in ``execute_complete`` as before. Errors
always resume the task, so its log and retry carry the message.

``on_kill`` runs when a user acts on the deferred task. Airflow does not say which action, so the trigger
reads the task instance's state: marked failed or success (or skipped), the call is cancelled so no GPU
keeps running unseen; cleared (the task is about to run again), the call is left running, and the next
try re-attaches to it through the task's ``task_state_store`` instead of paying for a second GPU job
(unless the operator is not ``durable``: then no try would re-attach, and a clear cancels too). When the
state cannot be read, it cancels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

from modal_gpu import hooks, task_state
from modal_gpu.hooks import UNREACHABLE_ERRORS, ModalGPUHook, ProgressChannel

# The XCom key of a task's result (what execute_complete's return value is stored under).
RETURN_VALUE_KEY = "return_value"
# How long storing the result XCom may take before the task resumes in a worker instead.
XCOM_PUSH_TIMEOUT_S = 60.0
# How long on_kill waits for the task state before cancelling anyway.
STATE_READ_TIMEOUT_S = 10.0


class ModalFunctionCallTrigger(BaseTrigger):
    """Fire when the Modal call ``call_id`` finishes.

    :param call_id: the ``fc-...`` id from ``spawn``.
    :param modal_conn_id: the ``modal`` connection that spawned it.
    :param poll_interval: seconds between status checks.
    :param cancel_on_kill: cancel the call when the user kills the deferred task.
    :param first_check_after: seconds before the first status check (see ``ModalGPUOperator``).
    :param reattach_on_clear: the next try re-attaches to the call (a ``durable`` operator), so a clear
        leaves it running; ``False`` cancels on a clear as well.
    :param end_from_trigger: on success, end the task here with the result as its ``return_value``
        XCom (in a real triggerer only; see the module docstring).
    :param progress_dict: name of the ``modal.Dict`` the job publishes its progress to (None: no progress).
    :param progress_key: the job's key in it.
    :param stall_after_s: warn when the progress has not changed for this many seconds (0: never).
    """

    def __init__(
        self,
        call_id: str,
        modal_conn_id: str | None = ModalGPUHook.default_conn_name,
        poll_interval: float = 10.0,
        cancel_on_kill: bool = True,
        first_check_after: float = 0.0,
        reattach_on_clear: bool = True,
        end_from_trigger: bool = True,
        progress_dict: str | None = None,
        progress_key: str | None = None,
        stall_after_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.progress_dict = progress_dict
        self.progress_key = progress_key
        self.stall_after_s = stall_after_s
        self.first_check_after = first_check_after
        self.call_id = call_id
        self.modal_conn_id = modal_conn_id
        self.poll_interval = poll_interval
        self.cancel_on_kill = cancel_on_kill
        self.reattach_on_clear = reattach_on_clear
        self.end_from_trigger = end_from_trigger

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "call_id": self.call_id,
                "modal_conn_id": self.modal_conn_id,
                "poll_interval": self.poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
                "first_check_after": self.first_check_after,
                "reattach_on_clear": self.reattach_on_clear,
                "end_from_trigger": self.end_from_trigger,
                "progress_dict": self.progress_dict,
                "progress_key": self.progress_key,
                "stall_after_s": self.stall_after_s,
            },
        )

    def progress_channel(self) -> ProgressChannel | None:
        if not self.progress_dict or not self.progress_key:
            return None
        return ProgressChannel(self.progress_dict, self.progress_key, float(self.stall_after_s or 0))

    async def _hook(self) -> ModalGPUHook:
        """A hook whose client and environment are read off the event loop (reading the connection may
        block).

        A trigger that starts while Modal is unreachable (a triggerer restarted during an outage) keeps
        trying for the same grace period as a status check (``hooks.UNREACHABLE_GRACE_S``) instead of
        failing the fold: building the client connects, and that gives up after about a minute.
        """
        since = time.monotonic()
        while True:
            hook = ModalGPUHook(modal_conn_id=self.modal_conn_id)
            try:
                await asyncio.to_thread(lambda hook=hook: (hook.client, hook.environment_name))
                return hook
            except UNREACHABLE_ERRORS as exc:
                if time.monotonic() - since > hooks.UNREACHABLE_GRACE_S:
                    raise
                self.log.warning("Modal unreachable (%s) while connecting; trying again", exc)
                await asyncio.sleep(self.poll_interval)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            hook = await self._hook()
            if self.first_check_after > 0:
                await asyncio.sleep(self.first_check_after)
            # No back-off here (first_delay = poll_interval): first_check_after already let short calls
            # finish, and a triggerer serving hundreds of folds should not poll each twice a second.
            status = await hook.await_done(
                self.call_id,
                self.poll_interval,
                first_delay=self.poll_interval,
                log=self.log,
                progress=self.progress_channel(),
            )
        except Exception as exc:  # e.g. the connection is gone, or Modal unreachable past the grace period
            yield TriggerEvent(
                {"status": "error", "call_id": self.call_id, "message": f"{type(exc).__name__}: {exc}"}
            )
            return
        if status.state == "success" and self.end_from_trigger and await self._store_result(status.result):
            self.log.info("Modal call %s succeeded; task ended here with its result", self.call_id)
            yield TaskSuccessEvent()
        elif status.state == "success":
            yield TriggerEvent({"status": "success", "call_id": self.call_id, "result": status.result})
        else:
            yield TriggerEvent({"status": "error", "call_id": self.call_id, "message": status.error})

    async def _store_result(self, result: Any) -> bool:
        """The result as the task's return-value XCom, as a worker would push it; False when there is no
        triggerer channel (``dag.test()``) or the push failed (the task then resumes in a worker)."""
        ti = self.task_instance
        if ti is None:
            return False
        try:
            from airflow.sdk.execution_time.comms import SetXCom
            from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS
            from airflow.sdk.execution_time.xcom import XCom

            keys = {
                "dag_id": ti.dag_id,
                "run_id": ti.run_id,
                "task_id": ti.task_id,
                "map_index": ti.map_index,
            }
            value = await asyncio.to_thread(XCom.serialize_value, result, key=RETURN_VALUE_KEY, **keys)
            push = SUPERVISOR_COMMS.asend(SetXCom(key=RETURN_VALUE_KEY, value=value, **keys))
            await asyncio.wait_for(push, timeout=XCOM_PUSH_TIMEOUT_S)
        except Exception:
            self.log.warning("could not store the result here; the task resumes in a worker", exc_info=True)
            return False
        return True

    async def on_kill(self) -> None:
        if not self.cancel_on_kill:
            return
        # Shielded: the triggerer may cancel this coroutine again while it still runs (it re-sends the
        # user-action cancel on its next loop), and Airflow swallows that CancelledError silently, which
        # would abandon the cancel RPC half-way. The shielded task finishes in the triggerer's loop.
        await asyncio.shield(self._kill())

    async def _kill(self) -> None:
        try:
            state = await asyncio.wait_for(
                task_state.aread(self.task_instance, self.log), STATE_READ_TIMEOUT_S
            )
        except TimeoutError:
            state = task_state.UNKNOWN
        if self.reattach_on_clear and task_state.someone_comes_back(state):
            self.log.info(
                "Task cleared (state %s): leaving Modal call %s running for the next try to re-attach",
                state,
                self.call_id,
            )
            return
        self.log.info("Task %s by a user: cancelling Modal call %s", state, self.call_id)
        hook = await self._hook()
        await asyncio.wait_for(hook.acancel(self.call_id), timeout=30)
        self.log.info("Modal call %s cancelled", self.call_id)
