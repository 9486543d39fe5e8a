"""Helpers for the reliability tests: a watch on the server's health and clients that misbehave.

`Watch` (fixture ``watch``) records what would go wrong silently in a gevent
server -- an exception reaching the hub (gevent prints it and goes on) or an
internal error logged from a cffi callback -- and counts the server's log
lines, so a test can say "exactly one more failure, one log line, this
counter".  `healthy_client` runs a well-behaved client alongside a hostile
one.  `MemoryBIOClient` is CPython's TLS client over memory BIOs, so a test
decides how its bytes reach the wire (1-byte writes, a reset at a chosen
moment).

A test module imports the fixture it uses::

    from reliability import watch  # noqa: F401 - fixture
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.socket
import pytest

import pausetls

from conftest import make_server_context, wait_until
from pki import PKI, Issued

MUTUAL = pausetls.VERIFY_PEER | pausetls.VERIFY_FAIL_IF_NO_PEER_CERT
HOST = "127.0.0.1"
Verify = Callable[[pausetls.TLSSocket, Any, int, int, int], Any]


def mutual_context(pki: PKI, server_cert: Issued, version: int | None, verify: Verify | None) -> pausetls.Context:
    """A server context that requires a client certificate from *pki*, checked by *verify*."""
    ctx = make_server_context(server_cert, version)
    ctx.load_verify_locations(pki.ca_path)
    ctx.set_verify(MUTUAL, verify)
    return ctx


def ping(port: int, ctx: ssl.SSLContext, timeout: float = 10, session: ssl.SSLSession | None = None) -> bytes:
    """A CPython ssl client (cooperative through gevent.ssl): handshake, send b"ping", read the answer."""
    with gevent.socket.create_connection((HOST, port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"ping")
            return tls.recv(100)


def outcome(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> bytes | str:
    """What a client got: the server's answer (b"" when closed), or the name of the error it saw."""
    try:
        return ping(port, ctx, session=session)
    except (OSError, ssl.SSLError) as exc:
        return type(exc).__name__


@contextmanager
def healthy_client(port: int, ctx: ssl.SSLContext) -> Iterator[None]:
    """A well-behaved client connects while the body runs (its connection overlaps the body's) and must be served."""
    client = gevent.spawn(ping, port, ctx)
    yield
    assert client.get(timeout=10) == b"ping"


def client_hello(version: ssl.TLSVersion | None = None) -> bytes:
    """The first flight of a real CPython ssl client: one TLS record holding its ClientHello."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.maximum_version = version
    outgoing = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def exchange(port: int, payload: bytes, *, close_write: bool = True, timeout: float = 10) -> bytes:
    """Send *payload* on a plain TCP connection, then read what the server sends until it closes.

    Raises `AssertionError` if the server does not close within *timeout*.
    """
    received = b""
    with gevent.socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # a close with unread data in the server's buffer is a reset: still a clean end
        except TimeoutError as exc:
            raise AssertionError(f"the server kept the connection open; it sent {received[:20]!r}") from exc
    return received


def is_alert_or_nothing(data: bytes) -> bool:
    """A server that refuses a connection sends a fatal alert record, or nothing before closing."""
    return data == b"" or (data[0] == 0x15 and len(data) >= 7)


def set_linger_zero(sock: Any) -> None:
    """Make close() send a TCP reset instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class MemoryBIOClient:
    """CPython's TLS client over memory BIOs on a gevent socket, writing *chunk* bytes per send.

    With ``chunk=1`` and a *gap*, every TLS record reaches the server one byte at a time.
    """

    def __init__(self, port: int, ctx: ssl.SSLContext, *, chunk: int = 65536, gap: float = 0.0) -> None:
        self.sock = gevent.socket.create_connection((HOST, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self._incoming, self._outgoing, server_hostname="localhost")
        self.chunk = chunk
        self.gap = gap

    def _flush(self) -> None:
        data = self._outgoing.read()
        for start in range(0, len(data), self.chunk):
            self.sock.sendall(data[start : start + self.chunk])
            if self.gap:
                gevent.sleep(self.gap)  # let the server read this piece on its own

    def _drive(self, operation: Callable[..., Any], *args: Any) -> Any:
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush()
            return result

    def handshake(self) -> None:
        self._drive(self.tls.do_handshake)

    def send(self, data: bytes) -> None:
        self._drive(self.tls.write, data)

    def recv(self, size: int = 65536) -> bytes:
        return bytes(self._drive(self.tls.read, size))

    def reset(self) -> None:
        set_linger_zero(self.sock)
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Mark:
    """The server's counters and the number of server log lines at one moment."""

    stats: dict[str, int]
    lines: int


class Watch:
    """Errors that reached gevent's hub, internal errors logged by pausetls, and the server's log lines."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.hub_errors: list[str] = []

    def record_hub_error(self, context: Any, exc_type: Any, value: Any, tb: Any) -> None:
        self.hub_errors.append(f"{context!r}: {exc_type.__name__}: {value}")

    def lines(self) -> list[str]:
        return [r.getMessage() for r in self.caplog.records if r.name == "pausetls.server"]

    def mark(self, server: Any) -> Mark:
        return Mark(server.stats.as_dict(), len(self.lines()))

    def one_failure(self, server: Any, since: Mark, counter: str = "handshakes_failed", settle: float = 0.05) -> str:
        """Exactly one more failure on *server* since *since*: *counter* went up by one, one new log line.

        Returns that log line.
        """
        before = since.stats[counter]
        assert wait_until(lambda: getattr(server.stats, counter) > before), f"{counter} stayed at {before}"
        gevent.sleep(settle)  # long enough for a second failure (or log line) to show up
        assert getattr(server.stats, counter) == before + 1, server.stats
        new = self.lines()[since.lines :]
        assert len(new) == 1, new
        return new[0]

    def assert_healthy(self) -> None:
        assert not self.hub_errors, self.hub_errors
        internal = [r.getMessage() for r in self.caplog.records if r.levelno >= logging.ERROR]
        assert not internal, internal


@pytest.fixture
def watch(caplog: pytest.LogCaptureFixture) -> Iterator[Watch]:
    """A `Watch` on the pausetls loggers and gevent's hub; fails the test if anything reached the hub."""
    caplog.set_level(logging.INFO, "pausetls")
    watcher = Watch(caplog)
    hub = gevent.get_hub()
    hub.handle_error = watcher.record_hub_error  # what gevent calls for an exception nobody caught
    try:
        yield watcher
    finally:
        del hub.handle_error
    watcher.assert_healthy()
