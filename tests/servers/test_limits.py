"""Resource bounds: concurrent and paused handshakes, with the server still serving established clients."""

from __future__ import annotations

import ssl
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest
from OpenSSL import crypto

import pausetls

from conftest import stdlib_client_context, wait_until
from gates import GENEROUS
from pki import PKI, Issued
from reliability import mutual_context, outcome, ping

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)


class HeldVerifier:
    """A verify callback that holds every leaf verification until the test releases them, and records how
    many were held at once: the test, not a clock, decides when paused handshakes move on."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.released = gevent.event.Event()

    def __call__(self, conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        if depth == 0:
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                if not self.released.wait(GENEROUS):
                    raise AssertionError("the test never released the paused handshakes")
            finally:
                self.now -= 1
        return bool(ok)


def limited_server(pki: PKI, server_cert: Issued, start_server: Any, **limits: Any) -> tuple[Any, HeldVerifier]:
    verifier = HeldVerifier()
    return start_server(mutual_context(pki, server_cert, pausetls.TLS1_3_VERSION, verifier), **limits), verifier


def established(port: int, ctx: ssl.SSLContext) -> Any:
    sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=GENEROUS)
    tls = ctx.wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"x")
    assert tls.recv(10) == b"x"
    return tls


def clients(port: int, ctx: ssl.SSLContext, count: int) -> list[gevent.Greenlet]:
    return [gevent.spawn(outcome, port, ctx) for _ in range(count)]


def outcomes(greenlets: list[gevent.Greenlet]) -> list[Any]:
    gevent.joinall(greenlets, timeout=2 * GENEROUS)
    return [g.value for g in greenlets]


def give_the_server_a_chance() -> None:
    """Let the server run for a while: long enough for a limit that does not hold to show, on any machine.
    (Only a broken limit can fail the check after it; a slow machine can at worst hide the break.)"""
    gevent.sleep(0.2)


def test_at_the_handshake_limit_new_clients_wait_in_the_backlog_and_established_ones_are_served(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any
) -> None:
    server, verifier = limited_server(pki, server_cert, start_server, max_handshakes=4)
    client = stdlib_client_context(pki, client_cert, cooperative=True)
    verifier.released.set()
    old = established(server.server_port, client)
    verifier.released.clear()
    try:
        waiting = clients(server.server_port, client, 20)
        assert wait_until(lambda: verifier.now == 4)
        for _ in range(3):  # while the server is at its limit, the established connection is served
            old.sendall(b"y")
            assert old.recv(10) == b"y"
        give_the_server_a_chance()
        assert verifier.now == 4, f"{verifier.now} handshakes paused at once with max_handshakes=4"
        verifier.released.set()
        results = outcomes(waiting)
    finally:
        verifier.released.set()
        old.close()
    assert results == [b"ping"] * 20
    assert verifier.most == 4
    assert server.stats.refused == 0


def test_while_too_many_handshakes_are_paused_no_new_one_is_admitted(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any
) -> None:
    server, verifier = limited_server(pki, server_cert, start_server, max_paused=4)
    client = stdlib_client_context(pki, client_cert, cooperative=True)
    try:
        first = clients(server.server_port, client, 4)
        assert wait_until(lambda: verifier.now == 4)  # the limit is reached
        second = clients(server.server_port, client, 4)
        give_the_server_a_chance()
        assert verifier.now == 4, "a handshake went ahead while 4 were paused"
        verifier.released.set()
        results = outcomes(first + second)
    finally:
        verifier.released.set()
    assert results == [b"ping"] * 8
    assert verifier.most == 4


def test_with_overload_refuse_clients_beyond_the_limit_are_closed_at_once(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any
) -> None:
    server, verifier = limited_server(pki, server_cert, start_server, max_handshakes=4, overload="refuse")
    client = stdlib_client_context(pki, client_cert, cooperative=True)
    try:
        admitted = clients(server.server_port, client, 4)
        assert wait_until(lambda: verifier.now == 4)
        # while the four are paused, each further client is closed at once: none waits for them
        assert b"ping" not in outcomes(clients(server.server_port, client, 16))
        assert server.stats.refused == 16
        verifier.released.set()
        assert outcomes(admitted) == [b"ping"] * 4
    finally:
        verifier.released.set()
    assert verifier.most == 4
    assert ping(server.server_port, client) == b"ping"  # below the limit again: served


def test_max_paused_counts_each_server_s_own_paused_handshakes(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any
) -> None:
    """One server's paused handshakes do not stop another server (in the same process) accepting."""
    busy, held = limited_server(pki, server_cert, start_server, max_paused=1)
    other, free = limited_server(pki, server_cert, start_server, max_paused=1)
    free.released.set()
    client = stdlib_client_context(pki, client_cert, cooperative=True)
    try:
        paused = clients(busy.server_port, client, 1)
        assert wait_until(lambda: held.now == 1)  # busy is at its limit
        assert busy.at_limit()
        assert not other.at_limit(), "another server's paused handshake counts against this one's max_paused"
        assert outcome(other.server_port, client) == b"ping"
        held.released.set()
        assert outcomes(paused) == [b"ping"]
    finally:
        held.released.set()
    assert free.most == 1
