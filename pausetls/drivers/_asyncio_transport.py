"""The async face of a `TLSSocket` and the asyncio transport that asyncio streams sit on.

`AsyncTLSConnection` runs each of the socket's calls through `greenlet_spawn`,
so the one retry loop in `TLSSocket` (jobs, WANT_READ/WANT_WRITE, callbacks
that pause) serves asyncio unchanged.  `TLSTransport` is an
`asyncio.Transport` over it: a reader task feeds the protocol, a writer task
drains the write buffer (with the usual high/low water marks), and close sends
close_notify after the buffer is written.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core.errors import Error
from ..core.tls_socket import TLSSocket
from .asyncio import greenlet_spawn

__all__ = ["AsyncTLSConnection", "TLSTransport"]

log = logging.getLogger("pausetls.asyncio")

_READ_SIZE = 64 * 1024


class AsyncTLSConnection:
    """A `TLSSocket` driven from asyncio tasks: the same SSL object and code, awaited."""

    def __init__(self, tls: TLSSocket) -> None:
        self.tls = tls

    async def do_handshake(self) -> None:
        await greenlet_spawn(self.tls.do_handshake)

    async def recv(self, bufsize: int = _READ_SIZE) -> bytes:
        data: bytes = await greenlet_spawn(self.tls.recv, bufsize)
        return data

    async def sendall(self, data: bytes) -> None:
        await greenlet_spawn(self.tls.sendall, data)

    async def aclose(self) -> None:
        """close_notify (after an alert: a short linger), then close the socket.

        Callers first end their own tasks' calls: a paused job must unwind before the SSL object goes.
        """
        await greenlet_spawn(self.tls.close)


class TLSTransport(asyncio.Transport):
    """An `asyncio.Transport` over an established `AsyncTLSConnection`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, conn: AsyncTLSConnection, protocol: Any, extra: dict[str, Any]
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._conn = conn
        self._protocol = protocol
        self._buffer = bytearray()
        self._in_flight = 0  # bytes handed to SSL_write and not written yet
        self._high_water, self._low_water = 64 * 1024, 16 * 1024
        self._protocol_paused = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.error: BaseException | None = None  # what ended the connection, if it failed
        self.closed = loop.create_future()  # set once the socket is closed
        protocol.connection_made(self)
        self._reader: asyncio.Task[None] = loop.create_task(self._read_loop())

    # -- reading ---------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                await self._reading.wait()
                data = await self._conn.recv(_READ_SIZE)
                if not data:
                    if not self._protocol.eof_received():
                        self.close()
                    return
                self._protocol.data_received(data)
        except (Error, OSError) as exc:
            self._fatal(exc)
        except Exception as exc:  # the protocol's own bug: this connection ends, the loop goes on
            log.exception("protocol failed in data_received")
            self._fatal(exc)

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set() and not self._closing

    # -- writing ---------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return  # as asyncio's transports do once the connection is lost: the bytes go nowhere
        self._buffer += data
        if self._writer is None:
            self._writer = self._loop.create_task(self._write_loop())
        if not self._protocol_paused and self.get_write_buffer_size() > self._high_water:
            self._protocol_paused = True
            self._protocol.pause_writing()

    async def _write_loop(self) -> None:
        try:
            while self._buffer:
                chunk, self._buffer = bytes(self._buffer), bytearray()
                self._in_flight = len(chunk)
                await self._conn.sendall(chunk)
                self._in_flight = 0
                if self._protocol_paused and self.get_write_buffer_size() <= self._low_water:
                    self._protocol_paused = False
                    self._protocol.resume_writing()
        except (Error, OSError) as exc:
            self._fatal(exc)
        finally:
            self._writer = None

    def can_write_eof(self) -> bool:
        return False  # TLS has no half close here (close_notify closes the write side for good)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer) + self._in_flight

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high_water = 64 * 1024 if high is None else high
        self._low_water = self._high_water // 4 if low is None else low

    # -- closing ---------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Write what is buffered, send close_notify, close."""
        self._start_closing(None, flush=True)

    def abort(self) -> None:
        self._start_closing(None, flush=False)

    def _fatal(self, exc: BaseException) -> None:
        if self.error is None and not self._closing:
            self.error = exc  # the server counts and logs it once the connection is closed
        self._start_closing(exc, flush=False)

    def _start_closing(self, exc: BaseException | None, *, flush: bool) -> None:
        if self._closing:
            return
        self._closing = True
        task = self._loop.create_task(self._close(exc, flush))
        task.add_done_callback(lambda _task: None)

    async def _close(self, exc: BaseException | None, flush: bool) -> None:
        try:
            for task, wanted in ((self._writer, flush), (self._reader, False)):
                if task is None or task is asyncio.current_task():
                    continue
                if not wanted:
                    task.cancel()
                await asyncio.wait([task])  # the call it runs must unwind before the SSL object goes
            await self._conn.aclose()
        finally:
            if not self.closed.done():
                self.closed.set_result(None)
            self._protocol.connection_lost(exc)

    def get_protocol(self) -> Any:
        return self._protocol

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol
