"""TCP under TLS: peers that reset or leave under a handler, and TCP_NODELAY on every socket.

Both servers (gevent's `TLSServer` and `ThreadedTLSServer`) against CPython ``ssl`` clients on
gevent sockets, so the test's hub runs the gevent server meanwhile.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import gevent.socket
import pytest
from gevent.pywsgi import WSGIHandler

import pausetls

from conftest import echo_handler, make_server_context, stdlib_client_context
from health import Watch
from pki import PKI, Issued
from reliability import HOST, ping, set_linger_zero

SERVERS = {"gevent": pausetls.TLSServer, "threads": pausetls.ThreadedTLSServer}


def nodelay(sock: Any) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


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


def report_nodelay(tls: pausetls.TLSSocket, address: Any) -> None:
    tls.recv(100)
    tls.sendall(b"on" if nodelay(tls) else b"off")


@pytest.mark.parametrize("enabled", [True, False], ids=["default", "turned-off"])
@pytest.mark.parametrize("kind", SERVERS)
def test_accepted_sockets_have_tcp_nodelay(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued, kind: str, enabled: bool
) -> None:
    server = start_server(make_server_context(server_cert), report_nodelay, server_class=SERVERS[kind])
    if not enabled:
        server.tcp_nodelay = False
    answer = ping(server.server_port, stdlib_client_context(pki, cooperative=True))
    assert answer == (b"on" if enabled else b"off")


class ReportingNodelay(WSGIHandler):  # type: ignore[misc]
    """pywsgi's handler, telling the application whether its socket has TCP_NODELAY."""

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ["pausetls.test.nodelay"] = nodelay(self.socket)
        return environ


def nodelay_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b"on" if environ["pausetls.test.nodelay"] else b"off"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_wsgi_server_sockets_have_tcp_nodelay(start_server: Callable[..., Any], pki: PKI, server_cert: Issued) -> None:
    server = start_server(
        make_server_context(server_cert),
        nodelay_app,
        server_class=pausetls.WSGIServer,
        handler_class=ReportingNodelay,
        log=None,
    )
    ctx = stdlib_client_context(pki, cooperative=True)
    with gevent.socket.create_connection((HOST, server.server_port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = b"".join(iter(lambda: tls.recv(65536), b""))
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\non"), response


@pytest.mark.parametrize("enabled", [True, False], ids=["default", "turned-off"])
def test_connect_sets_tcp_nodelay(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued, enabled: bool
) -> None:
    server = start_server(make_server_context(server_cert))
    kwargs = {} if enabled else {"tcp_nodelay": False}
    ctx = pausetls.client_context(cafile=str(pki.ca_path))
    with pausetls.connect((HOST, server.server_port), ctx, server_hostname="localhost", **kwargs) as tls:
        assert nodelay(tls) is enabled
        tls.sendall(b"ping")
        assert tls.recv(10) == b"ping"
