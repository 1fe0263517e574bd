"""Start and stop the fake Modal control plane (`scripts/fake_modal/server.py`) as a subprocess.

Used by tests and benchmarks that drive the *real* modal client::

    with FakeModalControlPlane({"my-app/train": "my_functions:echo"}, tmp_path) as plane:  # module:attr
        monkeypatch.setenv(...) for each item of plane.client_env()   # or os.environ.update in a script
        client = modal.Client.from_credentials("ak-fake", "as-fake")  # reads MODAL_SERVER_URL now
        fn = modal.Function.from_name("my-app", "train", client=client)
        call = fn.with_options(gpu="H100").spawn(x=1)
        assert call.get(timeout=10) == {"x": 1}
        assert plane.spawns()[0]["gpu"] == "H100"

The server runs in its own session (process group) so `stop()` also ends anything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

from scripts.process_groups import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN_ID = "ak-fake"
TOKEN_SECRET = "as-fake"
T = TypeVar("T")


class FakeModalControlPlane:
    """A fake Modal control plane subprocess serving `functions` ({"APP/NAME": "module:attr"}).

    `delay` makes every call wait that many seconds before its body runs (a stand-in for GPU start-up);
    `env` is added to the server's environment (e.g. PYTHONPATH for the registered modules).
    Files in `workdir`: events.jsonl (one JSON event per line), ready.txt (the port),
    server.stdout, server.stderr.
    """

    def __init__(
        self,
        functions: dict[str, str],
        workdir: Path,
        delay: float = 0.0,
        env: dict[str, str] | None = None,
    ):
        self.functions = dict(functions)
        self.workdir = Path(workdir)
        self.delay = delay
        self.env = dict(env or {})
        self.events_file = self.workdir / "events.jsonl"
        self.ready_file = self.workdir / "ready.txt"
        self.control_file = self.workdir / "control.txt"
        self.stdout_file = self.workdir / "server.stdout"
        self.stderr_file = self.workdir / "server.stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # ---- lifecycle ----

    def command(self) -> list[str]:
        specs = [f"{name}={target}" for name, target in self.functions.items()]
        return [
            sys.executable,
            "-m",
            "scripts.fake_modal.server",
            *specs,
            "--port",
            "0",
            "--delay",
            str(self.delay),
            "--events-file",
            str(self.events_file),
            "--ready-file",
            str(self.ready_file),
            "--control-file",
            str(self.control_file),
        ]

    def start(self, timeout: float = 60.0) -> Self:
        """Launch the server and wait until it listens; raise RuntimeError with its stderr if it does not."""
        if self.process is not None:
            raise RuntimeError("FakeModalControlPlane already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for path in (self.ready_file, self.events_file):
            path.unlink(missing_ok=True)
        self.events_file.touch()
        with self.stdout_file.open("wb") as stdout, self.stderr_file.open("wb") as stderr:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                self._port = int(self.ready_file.read_text().strip())
                return self
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(
                    f"fake Modal control plane exited with code {code} before listening.\n"
                    f"command: {' '.join(self.command())}\nstderr tail:\n{self._stderr_tail()}"
                )
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"fake Modal control plane did not listen within {timeout:.0f} s.\n"
            f"stderr tail:\n{self._stderr_tail()}"
        )

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the server's process group, then SIGKILL it if it is still there after `grace` s."""
        process, self.process = self.process, None
        if process is None:
            return
        pgid = process.pid  # start_new_session=True: the server leads its own group
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # also ends children that outlived the server
        process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_file.read_text(errors="replace")
        except FileNotFoundError:
            return "<no stderr file>"
        return "\n".join(text.splitlines()[-lines:]) or "<empty>"

    # ---- connection ----

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeModalControlPlane is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment that points the real modal client at this server (read when a client is built)."""
        return {"MODAL_SERVER_URL": self.url, "MODAL_TOKEN_ID": TOKEN_ID, "MODAL_TOKEN_SECRET": TOKEN_SECRET}

    # ---- events ----

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """All events so far (optionally only one `type`), in the order the server wrote them."""
        if not self.events_file.exists():
            return []
        events = []
        for line in self.events_file.read_text().splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            if type is None or event.get("type") == type:
                events.append(event)
        return events

    def spawns(self) -> list[dict[str, Any]]:
        return self.events("spawn")

    def cancels(self) -> list[dict[str, Any]]:
        return self.events("cancel")

    def finished(self) -> list[dict[str, Any]]:
        return self.events("finished")

    # ---- faults ----

    def preempt(self, call_id: str) -> None:
        """Preempt the call's running input: it stops and starts again (a ``preempted`` event)."""
        import httpx

        base = self.control_file.read_text().strip()
        httpx.post(f"{base}/faults/preempt/{call_id}", timeout=10).raise_for_status()

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
        """Poll `predicate` until it returns something truthy and return that; TimeoutError otherwise."""
        try:
            return wait_until(predicate, timeout, "a condition", interval)
        except TimeoutError:
            raise TimeoutError(
                f"condition not met within {timeout} s; events so far: {self.events()}"
            ) from None


# ---- the call log: which calls were alive when ----


def call_intervals(
    events: list[dict[str, Any]], function: str | None = None, call_ids: set[str] | None = None
) -> dict[str, tuple[float, float]]:
    """``{call_id: (spawned_at, finished_at)}`` from the plane's own events (still running: +inf).

    Optionally only calls of ``function``, or only ``call_ids``.
    """
    spawned = {
        e["call_id"]: e["t"]
        for e in events
        if e.get("type") == "spawn" and (function is None or e.get("function") == function)
    }
    finished = {e["call_id"]: e["t"] for e in events if e.get("type") == "finished"}
    return {
        call: (start, finished.get(call, float("inf")))
        for call, start in spawned.items()
        if call_ids is None or call in call_ids
    }


def max_alive(intervals: dict[str, tuple[float, float]]) -> int:
    """The most calls alive at the same moment (a call that finishes as another spawns is not overlapping)."""
    moments = sorted(
        [(start, 1) for start, _ in intervals.values()] + [(end, -1) for _, end in intervals.values()],
        key=lambda moment: (moment[0], moment[1]),  # ends before starts at the same time
    )
    alive = most = 0
    for _, change in moments:
        alive += change
        most = max(most, alive)
    return most
