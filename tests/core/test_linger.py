"""A fatal alert reaches the client even when the server closes with the client's bytes unread.

Closing a socket with unread bytes makes the kernel send a TCP reset, which can overtake the alert
on the client's side.  The server shuts down writing, reads and discards what is left (bounded in
time and bytes), then closes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest

import pausetls

from conftest import STDLIB_VERSIONS, make_server_context, stdlib_client_context, wait_until
from health import Watch
from pki import PKI, Issued
from reliability import HOST, client_hello, ping

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)


EXTRA = b"\x17\x03\x03\x40\x00" + bytes(16384)  # an application data record the server never reads
ALERT_RECORD, FATAL = 21, 2


def read_until_closed(sock: Any) -> bytes:
    received = b""
    while chunk := sock.recv(65536):  # a reset instead of the alert raises ConnectionResetError here
        received += chunk
    return received


SERVERS = [pausetls.TLSServer, pausetls.ThreadedTLSServer]


class Rejection:
    """A server whose client hello callback waits until the first client has written everything, then
    rejects it."""

    def __init__(self, server_class: type[Any], server_cert: Issued, start_server: Any, version: int) -> None:
        self.sent = threading.Event() if server_class is pausetls.ThreadedTLSServer else gevent.event.Event()
        ctx = make_server_context(server_cert, version)
        ctx.set_client_hello_callback(self.reject)
        self.server = start_server(ctx, server_class=server_class)
        self.hello = client_hello(STDLIB_VERSIONS[version])
        self.rejected = False

    def reject(self, conn: pausetls.TLSSocket, hello: Any) -> None:
        if self.rejected:
            return  # the later clients are served
        self.rejected = True
        assert self.sent.wait(timeout=10), "the client did not finish writing"
        raise pausetls.Alert(pausetls.ALERT_ACCESS_DENIED, "not you")

    def connect(self) -> Any:
        """A client that sent its hello and an unread record, then read the server's alert and end of stream."""
        sock = gevent.socket.create_connection((HOST, self.server.server_port), timeout=10)
        sock.sendall(self.hello + EXTRA)
        self.sent.set()
        assert_one_fatal_alert(read_until_closed(sock))
        return sock


def assert_one_fatal_alert(received: bytes) -> None:
    content_type, length, level, description = received[0], received[3:5], received[5], received[6]
    assert (content_type, length, level) == (ALERT_RECORD, b"\x00\x02", FATAL), received[:20]
    assert description == pausetls.ALERT_ACCESS_DENIED
    assert len(received) == 7, "nothing follows the alert"


def live_tls_sockets() -> int:
    return pausetls.live_objects()["tls_sockets"]


@pytest.mark.parametrize("server_class", SERVERS)
def test_the_alert_for_a_rejected_hello_arrives_though_the_client_sent_more(
    server_class: type[Any], server_cert: Issued, start_server: Any, watch: Watch, tls_version: int
) -> None:
    """The client sends its ClientHello and a record the server will never read, then lets the client
    hello callback go on, which rejects the handshake: the client reads the alert record, not a reset."""
    rejection = Rejection(server_class, server_cert, start_server, tls_version)
    mark = watch.mark(rejection.server)
    rejection.connect().close()
    assert "access_denied" in watch.failures(rejection.server, mark)[0]


@pytest.mark.parametrize("server_class", SERVERS)
def test_a_client_that_never_closes_is_closed_at_the_linger_timeout(
    server_class: type[Any], server_cert: Issued, start_server: Any, watch: Watch
) -> None:
    rejection = Rejection(server_class, server_cert, start_server, pausetls.TLS1_3_VERSION)
    rejection.server.linger_timeout = 0.3
    with rejection.connect():  # and stays open, sending nothing
        assert wait_until(lambda: live_tls_sockets() == 0, timeout=10)


@pytest.mark.parametrize("server_class", SERVERS)
def test_a_client_that_goes_on_sending_is_closed_at_the_linger_byte_limit(
    pki: PKI, server_class: type[Any], server_cert: Issued, start_server: Any, watch: Watch
) -> None:
    """While one connection lingers (for up to a minute), another client is served; the lingering one
    ends once the server has discarded its byte limit, though the client never closes."""
    rejection = Rejection(server_class, server_cert, start_server, pausetls.TLS1_3_VERSION)
    rejection.server.linger_timeout = 60
    with rejection.connect() as sock:
        assert live_tls_sockets() == 1  # the server sent its FIN and is still reading
        assert ping(rejection.server.server_port, stdlib_client_context(pki, cooperative=True)) == b"ping"
        assert wait_until(lambda: live_tls_sockets() == 1)  # the served one closed, the lingering one not
        with contextlib.suppress(OSError):  # the server may close (a reset) before all of it is sent
            sock.sendall(bytes(1024 * 1024))
        assert wait_until(lambda: live_tls_sockets() == 0, timeout=10)


def test_stop_ends_a_lingering_connection(server_cert: Issued, start_server: Any, watch: Watch) -> None:
    rejection = Rejection(pausetls.TLSServer, server_cert, start_server, pausetls.TLS1_3_VERSION)
    rejection.server.linger_timeout = 60
    with rejection.connect():
        assert live_tls_sockets() == 1
        started = time.monotonic()
        rejection.server.stop(timeout=0.2)
        assert time.monotonic() - started < 10
        assert live_tls_sockets() == 0
