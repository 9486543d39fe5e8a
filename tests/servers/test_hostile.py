"""Hostile and broken input against a running TLSServer, with a healthy client served alongside.

Each case checks the same four things: the hostile connection ends (an alert
or a close, within a bound), the server counts it, it logs exactly one line,
and nothing reaches gevent's hub (the ``watch`` fixture).  A healthy client
connects while the hostile one is open and must be served.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from gevent.event import Event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OpenSSL import crypto

import pausetls

from conftest import make_server_context, stdlib_client_context, wait_until
from gates import GENEROUS
from health import Watch
from peers import PeerGroup
from pki import PKI, Issued
from reliability import (
    HOST,
    MemoryBIOClient,
    client_hello,
    exchange,
    healthy_client,
    is_alert_nothing_or_server_hello,
    is_alert_or_nothing,
    mutual_context,
    s_client_argv,
)

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one server serves every example
)
HELLO = client_hello()


@pytest.fixture
def server(server_cert: Issued, start_server: Any) -> Any:
    return start_server(make_server_context(server_cert), handshake_timeout=2)


@pytest.fixture
def client_ctx(pki: PKI) -> ssl.SSLContext:
    return stdlib_client_context(pki, cooperative=True)


def refused(
    server: Any,
    client_ctx: ssl.SSLContext,
    watch: Watch,
    payload: bytes,
    answer_ok: Callable[[bytes], bool] = is_alert_or_nothing,
    **kwargs: Any,
) -> tuple[bytes, str]:
    """Send *payload* while a healthy client is served; the server's answer and its one log line."""
    since = watch.mark(server)
    with healthy_client(server.server_port, client_ctx):
        answer = exchange(server.server_port, payload, **kwargs)
    line = watch.one_failure(server, since, settle=0.01)
    assert answer_ok(answer), answer[:20]
    return answer, line


# -- garbage ---------------------------------------------------------------------------------


@EXAMPLES
@given(payload=st.binary(min_size=1, max_size=4096))
def test_random_bytes(server: Any, client_ctx: ssl.SSLContext, watch: Watch, payload: bytes) -> None:
    refused(server, client_ctx, watch, payload)


@st.composite
def mutated_hellos(draw: st.DrawFn) -> bytes:
    """A real ClientHello with a few bytes overwritten, bytes inserted or deleted, or cut short."""
    hello = bytearray(HELLO)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(hello) - 1))
        action = draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set":
            hello[at] = draw(st.integers(0, 255))
        elif action == "insert":
            hello[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif len(hello) > 1:
            del hello[at]
    return bytes(hello[: draw(st.integers(1, len(hello)))])


@EXAMPLES
@given(payload=mutated_hellos())
def test_malformed_client_hellos(server: Any, client_ctx: ssl.SSLContext, watch: Watch, payload: bytes) -> None:
    # then EOF: even a mutation OpenSSL accepts cannot finish a handshake
    refused(server, client_ctx, watch, payload, is_alert_nothing_or_server_hello)


@pytest.mark.parametrize("cut", [5, len(HELLO) // 2, len(HELLO) - 1], ids=["header-only", "half", "one-short"])
def test_truncated_client_hello(server: Any, client_ctx: ssl.SSLContext, watch: Watch, cut: int) -> None:
    _, line = refused(server, client_ctx, watch, HELLO[:cut])
    assert "without close_notify" in line or "unexpected eof" in line.lower(), line


BAD_RECORDS = {
    # what is sent, and what the log line says: each gets a fatal alert without the client closing
    "oversized-record": (b"\x16\x03\x01\x48\x01" + b"\x00" * 64, "packet length too long"),  # > 2^14 + 2048
    "oversized-handshake-message": (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "excessive message size"),  # 16 MiB
    "empty-records": (b"\x16\x03\x01\x00\x00" * 40, "record too small"),  # OpenSSL allows 32 in a row
    "alerts-before-hello": (b"\x15\x03\x01\x00\x02\x01\x00" * 10, "unexpected message"),
}


@pytest.mark.parametrize(("payload", "reason"), BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_bad_records_get_an_alert(
    server: Any, client_ctx: ssl.SSLContext, watch: Watch, payload: bytes, reason: str
) -> None:
    answer, line = refused(server, client_ctx, watch, payload, close_write=False)
    assert answer[:1] == b"\x15", f"expected an alert record, got {answer[:20]!r}"
    assert reason in line, line


@pytest.mark.parametrize("request_line", [b"GET / HTTP/1.1", b"CONNECT example.org:443 HTTP/1.1"])
def test_plaintext_http_to_the_tls_port(
    server: Any, client_ctx: ssl.SSLContext, watch: Watch, request_line: bytes
) -> None:
    _, line = refused(server, client_ctx, watch, request_line + b"\r\nHost: localhost\r\n\r\n", close_write=False)
    assert "http" in line.lower() and "request" in line.lower(), line


# -- a real handshake, written one byte at a time ----------------------------------------------------


def test_a_handshake_written_in_one_byte_writes_succeeds(
    pki: PKI, server: Any, client_ctx: ssl.SSLContext, watch: Watch, tls_version: int
) -> None:
    ctx = stdlib_client_context(pki, version=tls_version)
    client = MemoryBIOClient(server.server_port, ctx, chunk=1, gap=0.001)
    try:
        with healthy_client(server.server_port, client_ctx):
            client.handshake()
            client.send(b"one byte at a time")
            answer = b""
            while len(answer) < len(b"one byte at a time"):
                answer += client.recv()
    finally:
        client.close()
    assert answer == b"one byte at a time"
    assert server.stats.handshakes_completed == 2 and server.stats.handshakes_failed == 0
    assert watch.lines() == []


# -- clients that stall ----------------------------------------------------------------------


def _trickle(sock: Any, data: bytes, every: float) -> None:
    for byte in data:
        sock.sendall(bytes([byte]))
        gevent.sleep(every)


SLOW = {
    "silent": lambda sock: gevent.sleep(60),
    "partial-hello": lambda sock: sock.sendall(HELLO[:40]),
    "trickle": lambda sock: _trickle(sock, HELLO, 0.02),  # always making progress, never done in time
}


@pytest.mark.parametrize("behaviour", SLOW.values(), ids=SLOW.keys())
def test_slowloris_times_out_at_the_handshake_deadline(
    server_cert: Issued, client_ctx: ssl.SSLContext, start_server: Any, watch: Watch, behaviour: Any
) -> None:
    server = start_server(make_server_context(server_cert), handshake_timeout=0.3)
    since = watch.mark(server)
    with gevent.socket.create_connection((HOST, server.server_port), timeout=GENEROUS) as sock:
        sender = gevent.spawn(behaviour, sock)
        started = time.monotonic()
        with healthy_client(server.server_port, client_ctx):
            try:
                assert sock.recv(1024) == b""  # the server closed it
            except ConnectionResetError:
                pass  # closed with our bytes unread: a reset
        elapsed = time.monotonic() - started
        sender.kill()
    assert 0.25 < elapsed < GENEROUS, elapsed  # at the 0.3 s deadline (gevent's clock may lag a little), not never
    line = watch.one_failure(server, since, "handshakes_timed_out")
    assert "handshake timed out" in line


# -- a client that resets while its handshake is paused -------------------------------------------


def test_a_client_reset_while_its_handshake_is_paused(
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    client_ctx: ssl.SSLContext,
    start_server: Any,
    watch: Watch,
    tls_version: int,
) -> None:
    """TLS 1.2: the server's Finished meets the reset, one failure.  TLS 1.3: the client's whole flight
    (Finished included) is already in the server's socket buffer, and OpenSSL ignores a reset while it
    writes its session tickets (so it can still read what such a client sent), so the handshake completes
    and the handler reads the end of the stream."""
    paused, release = Event(), Event()
    handled: list[bytes] = []

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        if depth == 0 and not release.is_set():
            paused.set()
            release.wait(GENEROUS)
        return bool(ok)

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        handled.append(tls.recv(100))
        tls.sendall(handled[-1])

    server = start_server(mutual_context(pki, server_cert, tls_version, verify), handler)
    since = watch.mark(server)
    client = MemoryBIOClient(server.server_port, stdlib_client_context(pki, client_cert, tls_version))
    handshake = gevent.spawn(client.handshake)  # TLS 1.2 waits for the server's Finished, 1.3 does not
    assert paused.wait(GENEROUS)
    handshake.kill()
    client.reset()
    gevent.sleep(0.05)  # the reset reaches the server's socket
    release.set()  # the server resumes onto a reset connection
    with healthy_client(server.server_port, stdlib_client_context(pki, client_cert, cooperative=True)):
        pass
    if tls_version == pausetls.TLS1_2_VERSION:
        line = watch.one_failure(server, since)
        assert "Connection reset by peer" in line or "Broken pipe" in line, line
    else:
        assert wait_until(lambda: len(handled) == 2)
        assert sorted(handled) == [b"", b"ping"] and server.stats.handshakes_failed == 0
        assert watch.lines()[since.lines :] == []


# -- client-initiated renegotiation ---------------------------------------------------------------


def test_client_renegotiation_is_refused_and_the_server_stays_healthy(
    pki: PKI, server: Any, client_ctx: ssl.SSLContext, watch: Watch, openssl: str, peers: PeerGroup
) -> None:
    """OpenSSL 3 refuses client-initiated renegotiation (a no_renegotiation warning); s_client then gives up
    with a fatal alert, which ends that connection under the handler: counted and logged, once each.

    Tried from several connections at once.
    """
    argv = s_client_argv(openssl, pki, server.server_port, "-tls1_2")  # no -nocommands: a line "R" renegotiates
    since = watch.mark(server)
    clients = [peers.process(argv) for _ in range(4)]
    with healthy_client(server.server_port, client_ctx):
        for client in clients:
            client.write(b"hello\n")
            client.wait_output(b"hello\n")  # an established, echoing connection
            client.write(b"R\n")
        for client in clients:
            # s_client gave up on the connection; its exit status depends on whether the error surfaced in
            # its read or its write, so the refusal is read from what it printed
            client.wait()
            assert b"RENEGOTIATING" in client.stderr.data
            assert b"no renegotiation" in client.stderr.data, client.describe()
            assert client.stdout.data == b"hello\n"
    # s_client's fatal alert ends each connection under the handler -- or its close does first: a TCP reset
    # makes the kernel drop the unread alert, and the handler reads ECONNRESET (socket_errors)
    lines = watch.failures(server, since, 4, ("connection_errors", "socket_errors"))
    ended = ("alert handshake failure", "Connection reset by peer")
    assert all("TLS connection failed" in line and any(e in line for e in ended) for line in lines), lines
    assert server.stats.handshakes_completed == 5 and server.stats.handshakes_failed == 0
