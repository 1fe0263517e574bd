"""Small functions to register on the fake Modal control plane in tests (`APP/NAME=module:attr`)."""

from __future__ import annotations

import time
from typing import Any


def echo(**kwargs: Any) -> dict[str, Any]:
    """Return the keyword arguments the call was spawned with."""
    return kwargs


def sleep_then_return(seconds: float, value: Any) -> Any:
    """Sleep, then return `value` (a call that stays running for a while)."""
    time.sleep(seconds)
    return value


def fail(message: str) -> None:
    """Raise `RuntimeError(message)` (a remote failure)."""
    raise RuntimeError(message)


_STARTS: list[float] = []


def busy_for(seconds: float) -> int:
    """Stay busy in Python (small sleeps) for `seconds`; return how many times an input was started in
    this server (a preempted input starts again)."""
    _STARTS.append(time.time())
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.01)
    return len(_STARTS)
