"""``ModalGPUHook``: spawn, poll, wait on and cancel calls of deployed Modal functions.

Built on ``apache-airflow-providers-modal``'s ``ModalHook``, so credentials follow its rules (the
``modal`` connection's token id and secret, else the worker's ambient Modal credentials; a half-filled
connection is an error) and the client is rebuilt after a fork. The hook adds what a long GPU job needs:
a non-blocking status check (``get(timeout=0)``), cancellation, and the one polling loop (``wait``, and
``await_done`` for the trigger, which runs in the triggerer's event loop and must never block it), so the
operator's polling mode and the trigger cannot drift apart on retries, grace periods or back-off.

A job can also report progress while it runs: it puts a value under a key of a named ``modal.Dict``
(a :class:`ProgressChannel`). The polling loop reads that key on every check and logs the value's
``line`` (or its text) whenever it changes, so the progress lands in the task's log, and it warns when
the value has not changed for ``stall_after_s`` (the call is left running: stopping it is the user's
call). What the value means is the job's business; this module only relays it.
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
class ProgressChannel:
    """Where a running job publishes its progress: ``key`` of the named ``modal.Dict`` ``dict_name``.

    :param stall_after_s: warn when the value has not changed for this many seconds (0: never).
    """

    dict_name: str
    key: str
    stall_after_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.dict_name or not self.key:
            raise ValueError("a progress channel needs a Dict name and a key")
        if not self.stall_after_s >= 0:
            raise ValueError(f"stall_after_s must be >= 0, got {self.stall_after_s!r}")


def progress_text(value: Any) -> str:
    """What to log of a published value: its ``line`` when it is a mapping that has one, else its text."""
    if isinstance(value, dict) and isinstance(value.get("line"), str):
        return value["line"]
    return str(value)


class _ProgressWatch:
    """The polling loop's view of a progress channel: logs each new value, warns on a stall."""

    def __init__(self, call_id: str, channel: ProgressChannel, log: logging.Logger) -> None:
        self.call_id = call_id
        self.channel = channel
        self.log = log
        self.last_value: Any = None
        self.changed_at = time.monotonic()
        self.warned_at: float | None = None
        self.read_failed = False

    def seen(self, value: Any) -> None:
        """One read of the channel (None: nothing published yet)."""
        now = time.monotonic()
        if value is not None and value != self.last_value:
            self.last_value = value
            self.changed_at = now
            self.warned_at = None
            self.log.info("%s", progress_text(value))
            return
        stall = self.channel.stall_after_s
        quiet = now - self.changed_at
        if not stall or quiet < stall or (self.warned_at is not None and now - self.warned_at < stall):
            return
        self.warned_at = now
        last = "nothing published yet" if self.last_value is None else progress_text(self.last_value)
        self.log.warning(
            "Modal call %s: no progress for %.0f s (last: %s). It is not stopped; mark the task failed to "
            "cancel it.",
            self.call_id,
            quiet,
            last,
        )

    def unreadable(self, exc: Exception) -> None:
        """The channel could not be read: said once; a stall is still reported from the last value."""
        if not self.read_failed:
            self.log.warning("progress of Modal call %s unavailable: %s", self.call_id, describe_error(exc))
        self.read_failed = True
        self.seen(None)


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
        self,
        call_id: str,
        poll_interval: float,
        first_delay: float,
        grace_s: float,
        log: logging.Logger,
        progress: ProgressChannel | None = None,
    ) -> None:
        self.call_id = call_id
        self.progress = None if progress is None else _ProgressWatch(call_id, progress, log)
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
        """Seconds to wait after a "still running" answer (logs a note now and then, until the job
        reports progress of its own)."""
        self.unreachable_since = None
        now = time.monotonic()
        delay = next(self.delays)
        if self.progress is not None and self.progress.last_value is not None:
            self.log.debug("Modal call %s still running; next check in %.1f s", self.call_id, delay)
        elif now >= self.next_note:
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

    def _progress_dict(self, channel: ProgressChannel) -> modal.Dict:
        """A handle to the channel's Dict (lazy: no network until it is read)."""
        return modal.Dict.from_name(
            channel.dict_name, environment_name=self.environment_name, client=self.client
        )

    def read_progress(self, channel: ProgressChannel) -> Any:
        """The value the job last published under the channel's key, or None (nothing yet, no Dict yet)."""
        try:
            return self._progress_dict(channel).get(channel.key)
        except modal.exception.NotFoundError:
            return None

    async def aread_progress(self, channel: ProgressChannel) -> Any:
        """:meth:`read_progress` for the triggerer's event loop."""
        try:
            return await self._progress_dict(channel).get.aio(channel.key)
        except modal.exception.NotFoundError:
            return None

    def wait(
        self,
        call_id: str,
        poll_interval: float,
        *,
        first_delay: float = FIRST_POLL_DELAY_S,
        unreachable_grace_s: float | None = None,
        log: logging.Logger | None = None,
        progress: ProgressChannel | None = None,
    ) -> CallStatus:
        """Block until the call finishes; return its final status (``success`` or ``failed``).

        A failed call is returned, not raised: what a failure means (a task failure, an error event) is
        the caller's to say. Modal being unreachable is not a failure: the check is repeated every
        ``poll_interval`` for ``unreachable_grace_s`` (default ``UNREACHABLE_GRACE_S``), then the
        connection error is raised. While the call runs, checks back off from ``first_delay`` up to
        ``poll_interval`` (see :func:`poll_delays`).

        :param log: where to log progress (the caller's logger, so it lands in the task's log).
        :param progress: the job's progress channel, read and logged on every check (see the module).
        """
        state = self._wait_state(call_id, poll_interval, first_delay, unreachable_grace_s, log, progress)
        while True:
            try:
                status = self.poll(call_id)
            except UNREACHABLE_ERRORS as exc:
                time.sleep(state.unreachable(exc))
                continue
            if state.progress is not None:
                try:
                    state.progress.seen(self.read_progress(progress))  # type: ignore[arg-type]
                except Exception as exc:
                    state.progress.unreadable(exc)
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
        progress: ProgressChannel | None = None,
    ) -> CallStatus:
        """:meth:`wait` for the triggerer's event loop: every check and every sleep yields to the loop."""
        state = self._wait_state(call_id, poll_interval, first_delay, unreachable_grace_s, log, progress)
        while True:
            try:
                status = await self.apoll(call_id)
            except UNREACHABLE_ERRORS as exc:
                await asyncio.sleep(state.unreachable(exc))
                continue
            if state.progress is not None:
                try:
                    state.progress.seen(await self.aread_progress(progress))  # type: ignore[arg-type]
                except Exception as exc:
                    state.progress.unreadable(exc)
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
        progress: ProgressChannel | None = None,
    ) -> _WaitState:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        # Read at call time, not bound as a default: a deployment (or a test) may lower the module's value.
        grace_s = UNREACHABLE_GRACE_S if unreachable_grace_s is None else unreachable_grace_s
        return _WaitState(call_id, poll_interval, first_delay, grace_s, log or self.log, progress)
