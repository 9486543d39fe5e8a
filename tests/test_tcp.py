"""TCP under TLS: peers that reset or leave under a handler, and TCP_NODELAY on every socket.

Both servers (gevent's `TLSServer` and `ThreadedTLSServer`) against CPython ``ssl`` clients on
gevent sockets, so the test's hub runs the gevent server meanwhile.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import gevent.socket
import pytest

import pausetls

from conftest import echo_handler, make_server_context, stdlib_client_context
from health import Watch
from pki import PKI, Issued
from reliability import HOST, ping, set_linger_zero

SERVERS = {"gevent": pausetls.TLSServer, "threads": pausetls.ThreadedTLSServer}


def echo_then_write_until_the_peer_leaves(tls: pausetls.TLSSocket, address: Any) -> None:
    tls.sendall(tls.recv(100))
    while True:  # until a write meets the socket the client closed (and reset: it left data unread)
        tls.sendall(b"x" * 16384)


def echo_then_leave(port: int, ctx: ssl.SSLContext, *, reset: bool) -> None:
    """Handshake, one echo (which also reads TLS 1.3 tickets), then close (with SO_LINGER 0: a reset)."""
    with gevent.socket.create_connection((HOST, port), timeout=10) as sock:
        tls = ctx.wrap_socket(sock, server_hostname="localhost")
        tls.sendall(b"ping")
        assert tls.recv(100) == b"ping"
        if reset:
            set_linger_zero(tls)
        tls.close()


FAULTS = {
    # name: (handler, the client resets, what the server was doing)
    "reset-under-a-read": (echo_handler, True, "read failed"),
    "write-after-the-peer-left": (echo_then_write_until_the_peer_leaves, False, "write failed"),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", SERVERS)
def test_a_peer_tcp_error_under_the_handler_is_counted_and_logged_once(
    start_server: Callable[..., Any],
    pki: PKI,
    server_cert: Issued,
    tls_version: int,
    watch: Watch,
    kind: str,
    fault: str,
) -> None:
    """A reset, or a write after the peer left: socket_errors, one line, nothing in the hub, no traceback."""
    handler, reset, during = FAULTS[fault]
    server = start_server(make_server_context(server_cert, tls_version), handler, server_class=SERVERS[kind])
    mark = watch.mark(server)
    echo_then_leave(server.server_port, stdlib_client_context(pki, cooperative=True), reset=reset)
    line = watch.one_failure(server, mark, counter="socket_errors")
    assert line.startswith("TLS connection failed: peer=127.0.0.1:"), line
    assert during in line and ("Connection reset by peer" in line or "Broken pipe" in line), line
    assert server.stats.connection_errors == mark.stats["connection_errors"]  # TLS errors keep their counter
    assert ping(server.server_port, stdlib_client_context(pki, cooperative=True)) == b"ping"  # still serving
