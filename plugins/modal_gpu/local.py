"""The local backend: run a Modal function's body in the Airflow worker, without Modal or network.

Why: people without a Modal account (and every test) run the same DAG. The function is named by an
import path (``"package.module:function"``); when it is a ``modal.Function`` defined with
``@app.function``, its ``.local()`` runs the original Python body in this process, so both backends
execute the very same code with the same arguments and return the same result.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from typing import Any

import modal


def resolve_callable(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``"module:attr"`` into the function to call locally (a modal.Function's local body)."""
    if callable(spec) and not isinstance(spec, modal.Function):
        return spec
    target: Any = spec
    if isinstance(spec, str):
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise ValueError(f"local_callable must look like 'package.module:function', got {spec!r}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"local_callable {spec!r}: cannot import {module_name!r}: {exc}") from exc
        try:
            target = getattr(module, attr)
        except AttributeError:
            raise ValueError(f"local_callable {spec!r}: module {module_name!r} has no {attr!r}") from None
    if isinstance(target, modal.Function):
        return _quiet_local(target)
    if not callable(target):
        raise ValueError(f"local_callable {spec!r} is not callable")
    return target


def _quiet_local(fn: modal.Function) -> Callable[..., Any]:
    """``fn.local`` without Modal's warning that mounted Volumes are absent: the local backend's bodies
    read and write the local storage root instead, by design."""

    @functools.wraps(fn.local)
    def call(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*executing locally and will not have access")
            return fn.local(*args, **kwargs)

    return call
