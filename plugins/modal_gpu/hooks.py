"""``ModalGPUHook``: spawn, poll and cancel calls of deployed Modal functions.

Built on ``apache-airflow-providers-modal``'s ``ModalHook``, so credentials follow its rules (the
``modal`` connection's token id and secret, else the worker's ambient Modal credentials; a half-filled
connection is an error) and the client is rebuilt after a fork. The hook adds what a long GPU job needs:
a non-blocking status check (``get(timeout=0)``), cancellation, and async variants for the trigger,
which runs in the triggerer's event loop and must never block it.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, Literal

import modal
import modal.exception
from airflow.providers.modal.hooks.modal import ModalHook

CallState = Literal["running", "success", "failed"]
# The client could not reach Modal: the call's state is unknown (it may well still be running), so this
# is not a failed call. poll()/apoll() re-raise these; the trigger and the polling loop retry them.
UNREACHABLE_ERRORS: tuple[type[Exception], ...] = (modal.exception.ConnectionError,)


@dataclass(frozen=True)
class CallStatus:
    """Where a Modal function call stands. ``result`` is set on success, ``error`` on failure."""

    call_id: str
    state: CallState
    result: Any = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state != "running"


def describe_error(exc: BaseException) -> str:
    """One line for a remote error: its type and message (Modal re-raises the remote exception)."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else '(no message)'}"


class ModalGPUHook(ModalHook):
    """Calls of deployed Modal functions, through a ``modal`` connection.

    :param modal_conn_id: the Airflow connection (type ``modal``); see ``ModalHook`` for precedence.
    """

    hook_name = "Modal GPU"

    def function(
        self,
        app_name: str,
        function_name: str,
        *,
        gpu: str | None = None,
        timeout: int | None = None,
        retries: int | None = None,
    ) -> modal.Function:
        """A handle to the deployed function, with per-call GPU, timeout and retries when given."""
        fn = self.get_function(app_name, function_name)
        options: dict[str, Any] = {}
        if gpu:
            options["gpu"] = gpu
        if timeout:
            options["timeout"] = int(timeout)
        if retries is not None:
            options["retries"] = int(retries)
        return fn.with_options(**options) if options else fn

    def spawn(
        self,
        app_name: str,
        function_name: str,
        function_kwargs: dict[str, Any],
        *,
        gpu: str | None = None,
        timeout: int | None = None,
        retries: int | None = None,
    ) -> str:
        """Start one call and return its id (``fc-...``) without waiting for it."""
        fn = self.function(app_name, function_name, gpu=gpu, timeout=timeout, retries=retries)
        call = fn.spawn(**function_kwargs)
        return call.object_id

    def _call(self, call_id: str) -> modal.FunctionCall:
        """A handle to the call (no network: safe inside the triggerer's event loop)."""
        return modal.FunctionCall.from_id(call_id, client=self.client)

    def poll(self, call_id: str) -> CallStatus:
        """The call's state now, without waiting. A remote exception becomes ``state="failed"``."""
        try:
            result = self._call(call_id).get(timeout=0)
        except builtins.TimeoutError:  # still running (modal.exception.TimeoutError is another class)
            return CallStatus(call_id, "running")
        except UNREACHABLE_ERRORS:
            raise
        except Exception as exc:
            return CallStatus(call_id, "failed", error=describe_error(exc))
        return CallStatus(call_id, "success", result=result)

    def cancel(self, call_id: str, terminate_containers: bool = False) -> None:
        """Cancel the call. Modal stops its input; ``terminate_containers`` also kills the container."""
        self._call(call_id).cancel(terminate_containers=terminate_containers)

    async def apoll(self, call_id: str) -> CallStatus:
        """:meth:`poll` for the triggerer's event loop."""
        try:
            result = await self._call(call_id).get.aio(timeout=0)
        except builtins.TimeoutError:
            return CallStatus(call_id, "running")
        except UNREACHABLE_ERRORS:
            raise
        except Exception as exc:
            return CallStatus(call_id, "failed", error=describe_error(exc))
        return CallStatus(call_id, "success", result=result)

    async def acancel(self, call_id: str, terminate_containers: bool = False) -> None:
        """:meth:`cancel` for the triggerer's event loop."""
        await self._call(call_id).cancel.aio(terminate_containers=terminate_containers)
