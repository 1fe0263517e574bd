"""Preemption in the fake control plane: a running input is stopped and started again, as Modal does.

On Modal a preempted container is stopped and its input rescheduled on a new container, under the same
function call (the client sees one call; a body that checkpoints to a Volume resumes from there). The
fake runs bodies as threads, which cannot be killed, so a preemption raises :class:`Preempted` inside
the body's thread (``PyThreadState_SetAsyncExc``) at its next Python bytecode: the body stops wherever it
is, with no chance to finish, like a container that is stopped. The server then runs the input again.

A body blocked in one long C call (``time.sleep`` in a stand-in body) sees the exception only when that
call returns; training loops return to Python many times a second.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any


class Preempted(BaseException):
    """Raised inside a body's thread by :meth:`Preemptions.preempt` (a BaseException, so that a body's
    own ``except Exception`` cannot swallow it)."""


class Preemptions:
    """Which thread runs which call's input, so that one can be preempted by call id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, int] = {}

    def run(self, call_id: str, invoke: Callable[..., Any], *args: Any) -> Any:
        """``invoke(*args)`` in this (worker) thread, preemptible under ``call_id`` while it runs."""
        with self._lock:
            self._threads[call_id] = threading.get_ident()
        try:
            return invoke(*args)
        finally:
            with self._lock:
                self._threads.pop(call_id, None)

    def preempt(self, call_id: str) -> bool:
        """Stop the input of ``call_id`` now; False when it is not running."""
        with self._lock:
            ident = self._threads.get(call_id)
            if ident is None:
                return False
            raised = ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(Preempted)
            )
        return raised == 1
