"""``ModalFunctionCallTrigger``: waits on a Modal function call in the triggerer, without a worker slot.

The trigger holds only the call id and settings (it is serialized into the metadata database), polls
with ``get(timeout=0)`` so the triggerer's event loop never blocks, and fires once: success with the
call's result, or error with the remote exception's type and message. When a user marks the deferred
task failed or success, or clears it, ``on_kill`` cancels the call so no GPU keeps running unseen.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from modal_gpu.hooks import ModalGPUHook


class ModalFunctionCallTrigger(BaseTrigger):
    """Fire when the Modal call ``call_id`` finishes.

    :param call_id: the ``fc-...`` id from ``spawn``.
    :param modal_conn_id: the ``modal`` connection that spawned it.
    :param poll_interval: seconds between status checks.
    :param cancel_on_kill: cancel the call when the user kills the deferred task.
    """

    def __init__(
        self,
        call_id: str,
        modal_conn_id: str | None = ModalGPUHook.default_conn_name,
        poll_interval: float = 10.0,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.call_id = call_id
        self.modal_conn_id = modal_conn_id
        self.poll_interval = poll_interval
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "call_id": self.call_id,
                "modal_conn_id": self.modal_conn_id,
                "poll_interval": self.poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    async def _hook(self) -> ModalGPUHook:
        """A hook whose client is built off the event loop (reading the connection may block)."""
        hook = ModalGPUHook(modal_conn_id=self.modal_conn_id)
        await asyncio.to_thread(lambda: hook.client)
        return hook

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            hook = await self._hook()
            while True:
                status = await hook.apoll(self.call_id)
                if status.state == "success":
                    yield TriggerEvent(
                        {"status": "success", "call_id": self.call_id, "result": status.result}
                    )
                    return
                if status.state == "failed":
                    yield TriggerEvent({"status": "error", "call_id": self.call_id, "message": status.error})
                    return
                self.log.debug(
                    "Modal call %s still running; next check in %ss", self.call_id, self.poll_interval
                )
                await asyncio.sleep(self.poll_interval)
        except Exception as exc:  # e.g. the connection is gone: fail the task with the reason
            yield TriggerEvent(
                {"status": "error", "call_id": self.call_id, "message": f"{type(exc).__name__}: {exc}"}
            )

    async def on_kill(self) -> None:
        if not self.cancel_on_kill:
            return
        self.log.info("Task killed by a user: cancelling Modal call %s", self.call_id)
        hook = await self._hook()
        await asyncio.wait_for(hook.acancel(self.call_id), timeout=30)
