"""Resource bounds: concurrent and paused handshakes, with the server still serving established clients."""

from __future__ import annotations

import ssl
from typing import Any

import gevent
from OpenSSL import crypto

import pausetls

from conftest import make_server_context, stdlib_client_context
from pki import PKI, Issued
from reliability import MUTUAL, outcome, ping


class SlowVerifier:
    """A verify callback that pauses 0.3 s at the leaf and records how many pause at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def __call__(self, conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        if depth == 0:
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                gevent.sleep(0.3)
            finally:
                self.now -= 1
        return bool(ok)


def limited_server(pki: PKI, server_cert: Issued, start_server: Any, **limits: Any) -> tuple[Any, SlowVerifier]:
    verifier = SlowVerifier()
    ctx = make_server_context(server_cert, pausetls.TLS1_3_VERSION)
    ctx.load_verify_locations(pki.ca_path)
    ctx.set_verify(MUTUAL, verifier)
    return start_server(ctx, **limits), verifier


def established(port: int, ctx: ssl.SSLContext) -> Any:
    sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = ctx.wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"x")
    assert tls.recv(10) == b"x"
    return tls


def test_at_the_handshake_limit_new_clients_wait_in_the_backlog_and_established_ones_are_served(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any
) -> None:
    server, verifier = limited_server(pki, server_cert, start_server, max_handshakes=4)
    client = stdlib_client_context(pki, client_cert, cooperative=True)
    old = established(server.server_port, client)
    try:
        clients = [gevent.spawn(outcome, server.server_port, client) for _ in range(20)]
        gevent.sleep(0.1)
        for _ in range(3):  # while the server is at its limit, the established connection is served
            old.sendall(b"y")
            assert old.recv(10) == b"y"
        gevent.joinall(clients, timeout=20)
    finally:
        old.close()
    assert [c.value for c in clients] == [b"ping"] * 20
    assert verifier.most <= 4, f"{verifier.most} handshakes paused at once"
    assert server.stats.refused == 0


def test_while_too_many_handshakes_are_paused_no_new_one_is_admitted(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any
) -> None:
    server, verifier = limited_server(pki, server_cert, start_server, max_paused=4)
    client = stdlib_client_context(pki, client_cert, cooperative=True)
    first = [gevent.spawn(outcome, server.server_port, client) for _ in range(6)]
    with gevent.Timeout(5):
        while verifier.now < 6:  # admitted before any paused: all six pause
            gevent.sleep(0.01)
    second = [gevent.spawn(outcome, server.server_port, client) for _ in range(6)]
    gevent.sleep(0.15)
    assert verifier.now == 6, "a handshake went ahead while 6 > 4 were paused"
    gevent.joinall(first + second, timeout=20)
    assert [c.value for c in first + second] == [b"ping"] * 12
    assert verifier.most == 6


def test_with_overload_refuse_clients_beyond_the_limit_are_closed_at_once(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any
) -> None:
    server, verifier = limited_server(pki, server_cert, start_server, max_handshakes=4, overload="refuse")
    client = stdlib_client_context(pki, client_cert, cooperative=True)
    results = [gevent.spawn(outcome, server.server_port, client) for _ in range(20)]
    gevent.joinall(results, timeout=20)
    served = [r.value for r in results if r.value == b"ping"]
    assert 4 <= len(served) < 20
    assert server.stats.refused == 20 - len(served)
    assert verifier.most <= 4
    assert ping(server.server_port, client) == b"ping"  # below the limit again: served
