"""What a load client does on its one kept connection in a data-path cell (`bench.plan.WORKS`).

Each function runs on an established stdlib ``ssl`` socket until the clients
stop, recording each finished unit through *done(started, units)*: an echo
round trip, an HTTP request (both with their latency), the GB received in
bulk, the one echo of an idle connection (which then waits for the stop).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

Done = Callable[[float, float], None]  # (when the unit started, how many units)
Stopping = Callable[[], bool]

HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)\s*$")
BULK_BUFFER = 256 * 1024


class PeerClosed(Exception):
    """The server closed the connection in the middle of a unit."""


def _read_exactly(tls: Any, view: memoryview) -> None:
    while view:
        got = tls.recv_into(view)
        if not got:
            raise PeerClosed("end of stream in the middle of a reply")
        view = view[got:]


def echo(tls: Any, size: int, stopping: Stopping, done: Done, idle_wait: Callable[[], None]) -> None:
    message, reply = b"x" * size, bytearray(size)
    while not stopping():
        started = time.monotonic()
        tls.sendall(message)
        _read_exactly(tls, memoryview(reply))
        done(started, 1.0)


def idle(tls: Any, size: int, stopping: Stopping, done: Done, idle_wait: Callable[[], None]) -> None:
    started = time.monotonic()
    tls.sendall(b"x" * size)
    _read_exactly(tls, memoryview(bytearray(size)))
    done(started, 1.0)
    idle_wait()  # established and quiet until the cell ends


def bulk(tls: Any, size: int, stopping: Stopping, done: Done, idle_wait: Callable[[], None]) -> None:
    buffer = bytearray(BULK_BUFFER)
    tls.sendall(b"go")
    while not stopping():
        started = time.monotonic()
        got = tls.recv_into(buffer)
        if not got:
            raise PeerClosed("the bulk sender stopped")
        done(started, got / 2**30)


def http(tls: Any, size: int, stopping: Stopping, done: Done, idle_wait: Callable[[], None]) -> None:
    pending = b""
    while not stopping():
        started = time.monotonic()
        tls.sendall(HTTP_REQUEST)
        while b"\r\n\r\n" not in pending:
            pending += _chunk(tls)
        head, _, pending = pending.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise PeerClosed(f"unexpected response {head[:40]!r}")
        match = CONTENT_LENGTH.search(head)
        length = int(match.group(1)) if match else 0
        while len(pending) < length:
            pending += _chunk(tls)
        pending = pending[length:]
        done(started, 1.0)


def _chunk(tls: Any) -> bytes:
    data: bytes = tls.recv(16384)
    if not data:
        raise PeerClosed("end of stream in the middle of a response")
    return data


WORK = {"echo": echo, "idle": idle, "bulk": bulk, "http": http}
