"""Atomic file writes.

Why: summaries, manifests and checkpoints are read by other processes (Airflow tasks, a resumed fold,
a person opening the report). A crash halfway through a plain write would leave a truncated file that
looks valid. Writing to a temporary file in the same folder and renaming it over the target makes each
file appear whole or not at all (``os.replace`` is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success, move it over ``target``.

    Works for files and folders alike: the caller writes whatever it wants at the yielded path. On an
    exception the temporary is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if target.is_dir() and not target.is_symlink():
            # os.replace cannot replace a non-empty folder: move the old one aside first.
            old = tmp / ".old"
            os.replace(target, old)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` so that readers see the old file or the new one, never a part."""
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(target)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Atomic JSON write. ``allow_nan=False`` so a NaN never reaches a reader as invalid JSON."""
    return write_text_atomic(target, json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False) + "\n")


def write_with_atomic(target: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Let ``writer(tmp_path)`` produce the file (e.g. ``fig.savefig``), then move it into place."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)
