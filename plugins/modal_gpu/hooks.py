"""``ModalGPUHook``: spawn, poll, wait on and cancel calls of deployed Modal functions.

Built on ``apache-airflow-providers-modal``'s ``ModalHook``, so credentials follow its rules (the
``modal`` connection's token id and secret, else the worker's ambient Modal credentials; a half-filled
connection is an error) and the client is rebuilt after a fork. The hook adds what a long GPU job needs:
a non-blocking status check (``get(timeout=0)``), cancellation, and the one polling loop (``wait``, and
``await_done`` for the trigger, which runs in the triggerer's event loop and must never block it), so the
operator's polling mode and the trigger cannot drift apart on retries, grace periods or back-off.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import modal
import modal.exception
from airflow.providers.modal.hooks.modal import ModalHook

CallState = Literal["running", "success", "failed"]
# The client could not reach Modal: the call's state is unknown (it may well still be running), so this
# is not a failed call. poll()/apoll() re-raise these; wait()/await_done() retry them for a while.
UNREACHABLE_ERRORS: tuple[type[Exception], ...] = (modal.exception.ConnectionError,)
# How long Modal may stay unreachable before the polling loop gives up (re-raises) and the task fails.
UNREACHABLE_GRACE_S = 600.0
# The polling loop's first delay; each next one doubles, up to the caller's poll interval. Short calls (a
# dataset check, an aggregation) then finish in about their own time instead of a whole interval.
FIRST_POLL_DELAY_S = 0.5
# When the polling loop first notes (at info level) that a call is still running, then how often.
FIRST_NOTE_AFTER_S = 60.0
NOTE_EVERY_S = 300.0


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


def poll_delays(poll_interval: float, first: float = FIRST_POLL_DELAY_S) -> Iterator[float]:
    """Seconds to sleep after each "still running" answer: ``first``, doubling, capped at ``poll_interval``.

    A ``first`` at or above ``poll_interval`` gives a steady ``poll_interval`` (no back-off).
    """
    polls = 0
    while True:
        yield min(poll_interval, first * 2 ** min(polls, 10))
        polls += 1


class _WaitState:
    """The bookkeeping ``wait`` and ``await_done`` share, so the twins differ only in how they sleep.

    Each method says what to do next; the loops only poll and sleep.
    """

    def __init__(
        self, call_id: str, poll_interval: float, first_delay: float, grace_s: float, log: logging.Logger
    ) -> None:
        self.call_id = call_id
        self.poll_interval = poll_interval
        self.grace_s = grace_s
        self.log = log
        self.delays = poll_delays(poll_interval, first_delay)
        self.started = time.monotonic()
        self.next_note = self.started + FIRST_NOTE_AFTER_S
        self.unreachable_since: float | None = None

    def unreachable(self, exc: Exception) -> float:
        """Seconds to wait before the next check; re-raises ``exc`` once the grace period is over.

        The back-off does not advance: the call did not answer, so nothing was learned about it.
        """
        now = time.monotonic()
        self.unreachable_since = self.unreachable_since or now
        if now - self.unreachable_since > self.grace_s:
            raise exc
        self.log.warning("Modal unreachable (%s); checking call %s again", exc, self.call_id)
        return self.poll_interval

    def running(self) -> float:
        """Seconds to wait after a "still running" answer (logs a note now and then)."""
        self.unreachable_since = None
        now = time.monotonic()
        delay = next(self.delays)
        if now >= self.next_note:
            self.log.info("Modal call %s still running (%.0f s)", self.call_id, now - self.started)
            self.next_note = now + NOTE_EVERY_S
        else:
            self.log.debug("Modal call %s still running; next check in %.1f s", self.call_id, delay)
        return delay


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

    def wait(
        self,
        call_id: str,
        poll_interval: float,
        *,
        first_delay: float = FIRST_POLL_DELAY_S,
        unreachable_grace_s: float | None = None,
        log: logging.Logger | None = None,
    ) -> CallStatus:
        """Block until the call finishes; return its final status (``success`` or ``failed``).

        A failed call is returned, not raised: what a failure means (a task failure, an error event) is
        the caller's to say. Modal being unreachable is not a failure: the check is repeated every
        ``poll_interval`` for ``unreachable_grace_s`` (default ``UNREACHABLE_GRACE_S``), then the
        connection error is raised. While the call runs, checks back off from ``first_delay`` up to
        ``poll_interval`` (see :func:`poll_delays`).

        :param log: where to log progress (the caller's logger, so it lands in the task's log).
        """
        state = self._wait_state(call_id, poll_interval, first_delay, unreachable_grace_s, log)
        while True:
            try:
                status = self.poll(call_id)
            except UNREACHABLE_ERRORS as exc:
                time.sleep(state.unreachable(exc))
                continue
            if status.done:
                return status
            time.sleep(state.running())

    async def await_done(
        self,
        call_id: str,
        poll_interval: float,
        *,
        first_delay: float = FIRST_POLL_DELAY_S,
        unreachable_grace_s: float | None = None,
        log: logging.Logger | None = None,
    ) -> CallStatus:
        """:meth:`wait` for the triggerer's event loop: every check and every sleep yields to the loop."""
        state = self._wait_state(call_id, poll_interval, first_delay, unreachable_grace_s, log)
        while True:
            try:
                status = await self.apoll(call_id)
            except UNREACHABLE_ERRORS as exc:
                await asyncio.sleep(state.unreachable(exc))
                continue
            if status.done:
                return status
            await asyncio.sleep(state.running())

    def _wait_state(
        self,
        call_id: str,
        poll_interval: float,
        first_delay: float,
        unreachable_grace_s: float | None,
        log: logging.Logger | None,
    ) -> _WaitState:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        # Read at call time, not bound as a default: a deployment (or a test) may lower the module's value.
        grace_s = UNREACHABLE_GRACE_S if unreachable_grace_s is None else unreachable_grace_s
        return _WaitState(call_id, poll_interval, first_delay, grace_s, log or self.log)
