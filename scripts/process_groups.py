"""Servers that tests start, each stopped by process group: nothing they fork outlives them.

A server started here leads a new process group (or joins one that another process leads), so a stop
signals the whole group, waits, and then SIGKILLs what is left: a forked worker or task process cannot
be orphaned. Used by the Airflow launchers (``scripts/airflow_local.py``, ``scripts/airflow_celery.py``)
and the native PostgreSQL and Redis (``scripts/native_services.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def start(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    log: Path,
    join: int | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start ``argv`` with stdout and stderr appended to ``log``, leading a new process group, or joining
    the group ``join`` (which must be in this session). ``user`` runs it as that user (needs root)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0 if join is None else join,
            user=user,
        )


def stop_group(pgid: int, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Send ``sig`` to the group, wait up to ``timeout`` s for it to empty, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal ``pid`` and all its descendants at once (a machine or container dying); returns the pids."""
    tree = descendants(pid)
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, sig)
    return tree


def wait_until[T](predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
