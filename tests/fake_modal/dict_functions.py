"""Function bodies that use a named ``modal.Dict`` from inside a call, as a Modal container would."""

from __future__ import annotations

from typing import Any

import modal


def publish(dict_name: str, key: str, value: Any) -> bool:
    """Put ``value`` under ``key`` of the named Dict (created if missing) with the body's own client."""
    return modal.Dict.from_name(dict_name, create_if_missing=True).put(key, value)
