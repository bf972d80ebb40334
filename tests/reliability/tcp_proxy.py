"""A loopback TCP proxy that can drop and delay connections, for storage fault tests.

It runs its own asyncio loop on a daemon thread, so synchronous tests (and the host, a separate
process) can use it while the test thread sleeps or makes blocking HTTP calls. Three modes:

* ``pass``: bytes are copied both ways unchanged;
* ``drop``: every live connection is aborted when the mode is entered, and every new connection
  is closed as soon as it is accepted (what a client sees when a store is down behind a load
  balancer: connections reset, nothing answers);
* ``delay``: each chunk the client sends waits ``delay`` seconds before it is forwarded (every
  request gets slower; nothing is lost).

Counters say how many faults were injected (``dropped`` connections, ``delayed`` chunks).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Literal

Mode = Literal["pass", "drop", "delay"]


@dataclass
class ProxyCounters:
    accepted: int = 0
    dropped: int = 0
    delayed: int = 0
    forwarded_bytes: int = 0


class FaultyTcpProxy:
    """``127.0.0.1:<port>`` -> ``upstream_host:upstream_port`` with switchable faults."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.counters = ProxyCounters()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faulty-tcp-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control (any thread) ----------------------------------------------------------------
    def start(self) -> int:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self.port

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def set_mode(self, mode: Mode, delay: float = 0.0) -> None:
        asyncio.run_coroutine_threadsafe(self._set_mode(mode, delay), self._loop).result(10)

    # -- the proxy (its own loop) ------------------------------------------------------------
    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()
        await asyncio.sleep(0)

    async def _set_mode(self, mode: Mode, delay: float) -> None:
        self.mode, self.delay = mode, delay
        if mode == "drop":
            self.counters.dropped += len(self._writers)
            self._abort_all()

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.accepted += 1
        if self.mode == "drop":
            self.counters.dropped += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pump(reader, up_writer, outbound=True),
                                 self._pump(up_reader, writer, outbound=False))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, outbound: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, RuntimeError):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if outbound and self.mode == "delay" and self.delay > 0:
                    self.counters.delayed += 1
                    await asyncio.sleep(self.delay)
                if self.mode == "drop":
                    break
                writer.write(chunk)
                await writer.drain()
                self.counters.forwarded_bytes += len(chunk)
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
