"""A TCP proxy in front of the fake control plane that can make it unreachable, then reachable again.

Point the client (``MODAL_SERVER_URL``) at the proxy instead of the plane. ``cut()`` resets every open
connection and stops listening, so new ones are refused (what a client sees when Modal's API cannot be
reached); ``restore()`` listens again on the same port. The plane itself keeps running with all its calls,
as Modal's would during a network outage on the Airflow side. It runs in a thread of the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Self

from scripts.process_groups import free_port

HOST = "127.0.0.1"


class OutageProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port`` until ``cut()``."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="outage-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def cut(self) -> None:
        """Unreachable from now on: open connections are reset, new ones refused."""
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:  # contextlib.closing
        self.stop()

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, HOST, self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not a clean close
        self._writers.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            plane_reader, plane_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, plane_writer))
        await asyncio.gather(self._pipe(client_reader, plane_writer), self._pipe(plane_reader, client_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        self._writers.discard(writer)
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()
