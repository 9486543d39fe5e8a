"""Pausing verification: many paused handshakes at once, isolation, failures, cancellation."""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

import gevent
import gevent.server
import gevent.ssl
import pytest
from gevent.event import AsyncResult, Event
from OpenSSL import crypto

import pausetls
from pausetls.core._binding import lib

from conftest import stdlib_client_context, wait_until
from gates import GENEROUS, Gate
from pki import PKI, Issued
from reliability import mutual_context, ping

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)


def run_all(fns: list[Any], timeout: float = 30) -> list[Any]:
    """Run callables concurrently; each result is its value or the exception it raised."""
    greenlets = [gevent.spawn(fn) for fn in fns]
    gevent.joinall(greenlets, timeout=timeout)
    return [g.value if g.successful() else g.exception for g in greenlets]


def test_200_client_certificates_verified_concurrently_with_a_pausing_callback(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any, tls_version: int
) -> None:
    gate = Gate(200)  # every verification waits until all 200 are paused at once

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        assert isinstance(x509, crypto.X509)
        if depth == 0:
            gate.arrive()
        return bool(ok)

    server = start_server(mutual_context(pki, server_cert, tls_version, verify))
    client_ctx = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    results = run_all([lambda: ping(server.server_port, client_ctx, timeout=GENEROUS)] * 200, timeout=2 * GENEROUS)
    assert gate.opened, gate.why()
    assert results == [b"ping"] * 200
    assert server.stats.handshakes_completed == 200


def test_200_client_connects_with_a_pausing_verify_callback(pki: PKI, server_cert: Issued, tls_version: int) -> None:
    # the peer is CPython's ssl module behind gevent's StreamServer
    server_ctx = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(server_cert.chain_path), str(server_cert.key_path))

    def answer(sock: Any, address: Any) -> None:
        sock.sendall(sock.recv(100))

    server = gevent.server.StreamServer(("127.0.0.1", 0), answer, ssl_context=server_ctx)
    server.start()
    gates = [Gate(200) for _ in range(3)]  # at each depth, all 200 verifications are paused at once

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        gates[depth].arrive()
        return bool(ok)

    client_ctx = pausetls.client_context(str(pki.ca_path))
    client_ctx.set_min_proto_version(tls_version)
    client_ctx.set_max_proto_version(tls_version)
    client_ctx.set_verify(pausetls.VERIFY_PEER, verify)

    def one() -> bytes:
        with pausetls.connect(("127.0.0.1", server.server_port), client_ctx, server_hostname="localhost") as tls:
            tls.sendall(b"pong")
            return tls.recv(100)

    try:
        results = run_all([one] * 200, timeout=3 * GENEROUS)
    finally:
        server.stop(timeout=1)
    for gate in gates:  # root, intermediate, leaf
        assert gate.opened, gate.why()
    assert results == [b"pong"] * 200


def test_failed_verifications_keep_their_own_reasons_while_others_pause(
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    untrusted_client_cert: Issued,
    start_server: Any,
    tls_version: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        gevent.sleep(0.05)  # every callback pauses, so failing and passing handshakes interleave
        return bool(ok)

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        # a successful handshake inherits no error from its paused neighbours
        assert tls.get_verify_result() == 0
        assert lib.ERR_peek_error() == 0
        tls.sendall(tls.recv(100))

    server = start_server(mutual_context(pki, server_cert, tls_version, verify), handler)
    good = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    bad = stdlib_client_context(pki, untrusted_client_cert, tls_version, cooperative=True)
    caplog.set_level(logging.INFO, "pausetls.server")
    results = run_all([lambda ctx=ctx: ping(server.server_port, ctx) for ctx in [good, bad] * 50])
    assert results[0::2] == [b"ping"] * 50
    for failure in results[1::2]:
        assert isinstance(failure, ssl.SSLError | ConnectionError), failure
    failures = [r.getMessage() for r in caplog.records if "handshake failed" in r.getMessage()]
    assert len(failures) == 50
    assert all("unable to get local issuer certificate" in line for line in failures), failures[:3]
    assert server.stats.verification_failures == 50 and server.stats.handshakes_completed == 50


def _client_error(port: int, ctx: ssl.SSLContext) -> BaseException:
    try:
        ping(port, ctx)
    except (ssl.SSLError, ConnectionError) as exc:
        return exc
    raise AssertionError("handshake should have failed")


def test_a_verify_callback_that_raises_fails_only_its_handshake_with_an_alert(
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    tls_version: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raised = Event()

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        gevent.sleep(0.01)
        if not raised.is_set():  # the first connection's callback raises
            raised.set()
            raise ValueError("revocation database unreachable")
        return bool(ok)

    caplog.set_level(logging.INFO, "pausetls.server")
    server = start_server(mutual_context(pki, server_cert, tls_version, verify))
    ctx = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    error = _client_error(server.server_port, ctx)
    assert "alert" in str(error).lower() or isinstance(error, ConnectionError)
    assert "verify callback raised ValueError: revocation database unreachable" in caplog.text
    assert server.stats.callback_errors == 1
    assert ping(server.server_port, ctx) == b"ping"  # the next connection is untouched


def test_a_handshake_timeout_interrupting_a_paused_callback_fails_closed(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any, tls_version: int
) -> None:
    slow = Event()

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        if not slow.is_set():
            slow.set()
            gevent.sleep(10)  # interrupted by the server's handshake timeout
            return True  # never reached: a timed-out verification must not accept
        return bool(ok)

    server = start_server(mutual_context(pki, server_cert, tls_version, verify), handshake_timeout=0.3)
    ctx = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    stuck = gevent.spawn(_client_error, server.server_port, ctx)
    assert slow.wait(5)
    assert ping(server.server_port, ctx) == b"ping"  # others go on during the pause
    error = stuck.get(timeout=5)
    assert "alert" in str(error).lower() or isinstance(error, ConnectionError)
    assert server.stats.handshakes_timed_out == 1 and server.stats.handshakes_completed == 1


def test_pause_on_an_async_result_completed_by_another_greenlet(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any
) -> None:
    decisions: dict[str, AsyncResult] = {}

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        if depth:
            return bool(ok)
        name = x509.to_cryptography().subject.rfc4514_string()
        decision = decisions.setdefault(name.split("CN=")[1].split(",")[0], AsyncResult())
        return bool(pausetls.pause(decision, timeout=5)) and bool(ok)

    server = start_server(mutual_context(pki, server_cert, pausetls.TLS1_3_VERSION, verify))
    ctx = stdlib_client_context(pki, client_cert, cooperative=True)
    client = gevent.spawn(ping, server.server_port, ctx)
    assert wait_until(lambda: "client one" in decisions)
    assert not client.ready()
    decisions["client one"].set(True)
    assert client.get(timeout=5) == b"ping"


def test_a_client_vanishing_during_a_paused_handshake_leaves_nothing_behind(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any, tls_version: int
) -> None:
    paused = Event()

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        paused.set()
        gevent.sleep(0.3)
        return bool(ok)

    server = start_server(mutual_context(pki, server_cert, tls_version, verify))
    ctx = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)

    def vanish() -> None:
        sock = gevent.socket.create_connection(("127.0.0.1", server.server_port))
        tls = ctx.wrap_socket(sock, server_hostname="localhost", do_handshake_on_connect=False)
        try:
            tls.do_handshake()  # TLS 1.3: completes before the server has verified us
        except ssl.SSLError:
            pass
        paused.wait(5)
        sock.close()

    if tls_version == pausetls.TLS1_2_VERSION:
        gevent.spawn(vanish)  # TLS 1.2: the client's handshake waits for the server's Finished
    else:
        vanish()
    assert paused.wait(5)
    assert wait_until(lambda: server.stats.handshakes_failed + server.stats.handshakes_completed == 1)
    assert wait_until(lambda: pausetls.live_objects()["ssl"] == 0)


def test_stop_cancels_100_paused_handshakes_and_frees_everything(
    pki: PKI, server_cert: Issued, client_cert: Issued, tls_version: int
) -> None:
    entered = 0

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        nonlocal entered
        entered += 1
        gevent.sleep(30)
        return True  # never reached: cancellation must not accept

    server = pausetls.TLSServer(
        ("127.0.0.1", 0), lambda tls, addr: None, context=mutual_context(pki, server_cert, tls_version, verify)
    )
    server.start()
    ctx = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    clients = [gevent.spawn(_client_error, server.server_port, ctx) for _ in range(100)]
    assert wait_until(lambda: entered == 100)
    assert server.stats.handshaking == 100
    started = time.monotonic()
    server.stop(timeout=1)
    assert time.monotonic() - started < GENEROUS  # stop(timeout=1) cancels them; it does not wait 30 s
    gevent.joinall(clients, timeout=10)
    assert all(c.successful() for c in clients)  # every client saw its handshake fail
    assert server.stats.handshakes_cancelled == 100 and server.stats.handshakes_completed == 0
    assert pausetls.live_objects()["ssl"] == 0 and pausetls.live_objects()["tls_sockets"] == 0


def test_a_callback_calling_back_into_its_own_connection_is_refused(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        conn.recv(10)  # re-entering OpenSSL on the same SSL object from inside its own call
        return True

    caplog.set_level(logging.INFO, "pausetls.server")
    server = start_server(mutual_context(pki, server_cert, pausetls.TLS1_2_VERSION, verify))
    _client_error(server.server_port, stdlib_client_context(pki, client_cert, cooperative=True))
    assert "ConnectionBusyError" in caplog.text
    assert server.stats.callback_errors == 1
