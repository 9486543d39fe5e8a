"""Graceful stop: ``stop(timeout)`` ends paused handshakes at once and established connections with close_notify.

`tests/core/test_pause.py` shows 100 paused handshakes cancelled and freed; here
established and paused connections are open together, and the established
clients check that what ends their stream is a close_notify, not a bare TCP
close.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import gevent
import pytest
from OpenSSL import crypto

import pausetls

from conftest import stdlib_client_context, wait_until
from gates import GENEROUS
from health import Watch
from pki import PKI, Issued
from reliability import (
    HOST,
    mutual_context,
    outcome,
)

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)

SLOW_CN = "slow client"


@pytest.fixture(scope="module")
def slow_client_cert(pki: PKI) -> Issued:
    return pki.issue(SLOW_CN, server=False)


def established(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    """A client that has been served once and now waits, reporting truncation (no suppressed ragged EOFs)."""
    sock = gevent.socket.create_connection((HOST, port), timeout=GENEROUS)
    tls = ctx.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)
    tls.sendall(b"ping")
    assert tls.recv(10) == b"ping"
    return tls


@pytest.mark.parametrize("timeout", [0.5, 2.0])
def test_stop_ends_established_and_paused_connections_within_the_timeout(
    timeout: float,
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    slow_client_cert: Issued,
    start_server: Any,
    watch: Watch,
    tls_version: int,
) -> None:
    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        if depth == 0 and x509.to_cryptography().subject.rfc4514_string().startswith(f"CN={SLOW_CN}"):
            gevent.sleep(4 * GENEROUS)  # paused until stop() cancels it
        return bool(ok)

    server = start_server(mutual_context(pki, server_cert, tls_version, verify))
    fast = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    slow = stdlib_client_context(pki, slow_client_cert, tls_version, cooperative=True)
    clients = [established(server.server_port, fast) for _ in range(5)]
    paused = [gevent.spawn(outcome, server.server_port, slow) for _ in range(5)]
    assert wait_until(lambda: server.stats.handshaking == 5)
    try:
        started = time.monotonic()
        server.stop(timeout=timeout)
        elapsed = time.monotonic() - started
        assert elapsed < GENEROUS, f"stop({timeout}) took {elapsed:.2f} s: it waited for the paused handshakes"
        for client in clients:
            assert client.recv(10) == b""  # close_notify: a truncation would raise SSLEOFError
    finally:
        for client in clients:
            client.close()
    gevent.joinall(paused, timeout=GENEROUS)
    assert all(p.value != b"ping" for p in paused), [p.value for p in paused]
    assert server.stats.handshakes_cancelled == 5 and server.stats.handshakes_completed == 5
    assert len([line for line in watch.lines() if "handshake cancelled" in line]) == 5
