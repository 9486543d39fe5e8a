"""`ThreadedTLSServer`: real stdlib ``ssl`` clients in OS threads against a server of OS threads."""

from __future__ import annotations

import functools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

import pausetls
from pausetls.drivers.gevent import gevent_driver
from pausetls.stores import MemoryStore, SessionStore, store_from_url

from conftest import echo_handler, make_server_context, stdlib_client_context, wait_until
from gates import GENEROUS
from hook_clients import ThreadAnsweredSNI
from pki import PKI, Issued
from servers import MemcachedServer

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)

REQUIRE_CLIENT_CERT = pausetls.VERIFY_PEER | pausetls.VERIFY_FAIL_IF_NO_PEER_CERT


@pytest.fixture
def start_threaded(start_server: Callable[..., Any]) -> Callable[..., pausetls.ThreadedTLSServer]:
    """conftest's `start_server` making ThreadedTLSServers."""
    return functools.partial(start_server, server_class=pausetls.ThreadedTLSServer)


class BarrierVerifier:
    """A verify callback that blocks its thread on the leaf until *parties* threads are blocked there at
    once (a cyclic barrier: they go on together, and the next *parties* meet again); counts the most inside."""

    def __init__(self, parties: int) -> None:
        self.most = 0
        self._inside = 0
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(parties, timeout=GENEROUS)

    def __call__(self, conn: pausetls.TLSSocket, x509: Any, errnum: int, depth: int, ok: int) -> bool:
        if depth == 0:
            with self._lock:
                self._inside += 1
                self.most = max(self.most, self._inside)
            try:
                self._barrier.wait()  # a blocking call: it blocks this connection's thread only
            finally:
                with self._lock:
                    self._inside -= 1
        return bool(ok)


@dataclass
class Echoed:
    data: bytes
    version: str | None
    session: ssl.SSLSession | None
    resumed: bool


def echo_once(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> Echoed:
    """Handshake and one echo (which also reads a TLS 1.3 ticket)."""
    with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"ping")
            return Echoed(tls.recv(100), tls.version(), tls.session, tls.session_reused)


def served(connect: Callable[[], Echoed]) -> bool:
    """Whether the server echoed.  A refused TLS 1.3 client may see an alert, a reset or only the end
    of the stream: it finishes its handshake before the server has checked its certificate."""
    try:
        return connect().data != b""
    except (ssl.SSLError, ConnectionError):
        return False


def in_threads(count: int, fn: Callable[[], Any]) -> list[Any]:
    """Run *fn* in *count* OS threads at once; its results (or re-raised errors)."""
    with ThreadPoolExecutor(count) as pool:
        return [future.result(timeout=2 * GENEROUS) for future in [pool.submit(fn) for _ in range(count)]]


def verifying_context(server_cert: Issued, pki: PKI, callback: Any, version: int | None = None) -> pausetls.Context:
    ctx = make_server_context(server_cert, version)
    ctx.load_verify_locations(pki.ca_path)
    ctx.set_verify(REQUIRE_CLIENT_CERT, callback)
    return ctx


def test_echo_over_each_tls_version(
    start_threaded: Callable[..., pausetls.ThreadedTLSServer], pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    server = start_threaded(make_server_context(server_cert, tls_version))
    echoed = echo_once(server.server_port, stdlib_client_context(pki, version=tls_version))
    assert echoed.data == b"ping"
    assert echoed.version == {pausetls.TLS1_2_VERSION: "TLSv1.2", pausetls.TLS1_3_VERSION: "TLSv1.3"}[tls_version]
    assert wait_until(lambda: server.stats.handshakes_completed == 1 and server.stats.accepted == 1)


def test_blocking_callbacks_overlap(
    start_threaded: Callable[..., pausetls.ThreadedTLSServer], pki: PKI, server_cert: Issued, client_cert: Issued
) -> None:
    """20 handshakes whose verify callbacks block their threads are all blocked at once: the barrier of 20
    in the callback lets none through until every one has arrived."""
    verify = BarrierVerifier(20)
    server = start_threaded(verifying_context(server_cert, pki, verify))
    client = stdlib_client_context(pki, client_cert)
    results = in_threads(20, lambda: echo_once(server.server_port, client).data)
    assert results == [b"ping"] * 20
    assert verify.most == 20
    assert wait_until(lambda: server.stats.handshakes_completed == 20)
    assert server.stats.handshakes_failed == 0


def test_a_callback_may_return_a_future_another_thread_completes(
    start_threaded: Callable[..., pausetls.ThreadedTLSServer], pki: PKI, server_cert: Issued
) -> None:
    with ThreadPoolExecutor(2) as pool:
        servername = ThreadAnsweredSNI(pool)
        ctx = make_server_context(server_cert)
        ctx.set_tlsext_servername_callback(servername)
        server = start_threaded(ctx)
        client = pool.submit(echo_once, server.server_port, stdlib_client_context(pki))
        assert servername.asked.wait(GENEROUS)
        assert not client.done()  # the handshake waits for the future
        servername.release.set()
        assert client.result(timeout=GENEROUS).data == b"ping"
    assert wait_until(lambda: server.stats.handshakes_completed == 1)


def test_failed_handshakes_are_counted_and_logged(
    start_threaded: Callable[..., pausetls.ThreadedTLSServer],
    pki: PKI,
    server_cert: Issued,
    untrusted_client_cert: Issued,
    client_cert: Issued,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def verify(conn: pausetls.TLSSocket, x509: Any, errnum: int, depth: int, ok: int) -> bool:
        if depth == 0 and "CN=client one" in x509.to_cryptography().subject.rfc4514_string():
            raise RuntimeError("revocation database unreachable")
        return bool(ok)

    caplog.set_level(logging.INFO, logger="pausetls.server")
    server = start_threaded(verifying_context(server_cert, pki, verify))
    for client in (stdlib_client_context(pki, untrusted_client_cert), stdlib_client_context(pki, client_cert)):
        assert not served(functools.partial(echo_once, server.server_port, client))
    assert wait_until(lambda: server.stats.handshakes_failed == 2)
    assert server.stats.verification_failures == 1
    assert server.stats.callback_errors == 1
    assert server.stats.handshakes_completed == 0
    failures = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failures) == 2
    assert any("revocation database unreachable" in message for message in failures)
    assert all("peer=127.0.0.1:" in message for message in failures)


def test_handshake_deadline(start_threaded: Callable[..., pausetls.ThreadedTLSServer], server_cert: Issued) -> None:
    server = start_threaded(make_server_context(server_cert), handshake_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.server_port)):  # a client that never speaks
        assert wait_until(lambda: server.stats.handshakes_timed_out == 1)
    assert server.stats.handshakes_failed == 1


def test_stop_cancels_handshakes_and_closes_connections_with_close_notify(
    start_threaded: Callable[..., pausetls.ThreadedTLSServer], pki: PKI, server_cert: Issued, client_cert: Issued
) -> None:
    paused = threading.Event()
    calls = 0

    def verify(conn: pausetls.TLSSocket, x509: Any, errnum: int, depth: int, ok: int) -> bool:
        nonlocal calls
        if depth == 0:
            calls += 1
            if calls == 2:  # the second client's handshake stays inside its callback
                paused.set()
                time.sleep(1.0)
        return bool(ok)

    server = start_threaded(verifying_context(server_cert, pki, verify))
    client = stdlib_client_context(pki, client_cert)
    with ThreadPoolExecutor(2) as pool:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=GENEROUS) as sock:
            # suppress_ragged_eofs=False: only a close_notify reads as b""
            established = client.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)
            established.sendall(b"x")
            assert established.recv(10) == b"x"
            reading = pool.submit(established.recv, 10)
            handshaking = pool.submit(echo_once, server.server_port, client)
            assert paused.wait(GENEROUS)
            started = time.monotonic()
            server.stop(timeout=0.2)
            assert time.monotonic() - started < GENEROUS  # it does not wait for the blocked thread
            assert reading.result(timeout=GENEROUS) == b""  # close_notify from the handler's thread
            assert not served(lambda: handshaking.result(timeout=GENEROUS)), (
                "a handshake cancelled by stop() was served"
            )
            established.close()
    assert server.closed
    assert server.stats.handshakes_completed == 1
    assert server.stats.handshakes_cancelled == 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.server_port), timeout=1).close()


def test_bounded_pool(
    start_threaded: Callable[..., pausetls.ThreadedTLSServer], pki: PKI, server_cert: Issued, client_cert: Issued
) -> None:
    """A pool of 2 threads serves 6 clients two at a time; the others wait for a thread, then succeed."""
    verify = BarrierVerifier(2)  # each pair of handshakes meets in the callback: three rounds of two
    server = start_threaded(verifying_context(server_cert, pki, verify), pool_size=2)
    client = stdlib_client_context(pki, client_cert)
    assert in_threads(6, lambda: echo_once(server.server_port, client).data) == [b"ping"] * 6
    assert verify.most == 2  # never a third at once: the pool holds two
    assert wait_until(lambda: server.stats.handshakes_completed == 6)


def test_bad_pool_size(server_cert: Issued) -> None:
    ctx = make_server_context(server_cert)
    for size in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="pool_size"):
            pausetls.ThreadedTLSServer(("127.0.0.1", 0), echo_handler, context=ctx, pool_size=size)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Context"):
        pausetls.ThreadedTLSServer(("127.0.0.1", 0), echo_handler)


@pytest.mark.parametrize("store_kind", ["memory", "memcached"])
def test_resumption_through_a_store(
    start_threaded: Callable[..., pausetls.ThreadedTLSServer],
    pki: PKI,
    server_cert: Issued,
    tls_version: int,
    store_kind: str,
    request: pytest.FixtureRequest,
) -> None:
    if store_kind == "memory":
        store: SessionStore = MemoryStore()
    else:  # no driver given: the server binds it to the thread driver (blocking sockets)
        store = store_from_url(request.getfixturevalue("memcached_server").url)
    ctx = make_server_context(server_cert, tls_version)
    cache = ctx.set_session_cache(store)
    server = start_threaded(ctx)
    client = stdlib_client_context(pki, version=tls_version)
    first = echo_once(server.server_port, client)
    assert not first.resumed
    assert wait_until(lambda: cache.stats.stored >= 1)  # written by the thread driver's deferred workers
    second = echo_once(server.server_port, client, first.session)
    assert second.data == b"ping"
    assert second.resumed
    assert wait_until(lambda: server.stats.resumed == 1)
    assert cache.stats.hits == 1
    store.close()


def test_a_store_bound_to_gevent_is_refused(server_cert: Issued, memcached_server: MemcachedServer) -> None:
    ctx = make_server_context(server_cert)
    ctx.set_session_cache(store_from_url(memcached_server.url, driver=gevent_driver))  # waits on gevent's hub
    with pytest.raises(ValueError, match="waits through the gevent driver: it cannot serve the threads driver"):
        pausetls.ThreadedTLSServer(("127.0.0.1", 0), echo_handler, context=ctx)


def test_a_session_cache_serves_the_one_driver_it_was_bound_to(server_cert: Issued, start_server: Any) -> None:
    """A gevent server binds its context's cache: its deferred writes run on that hub, so a threaded
    server must not take the same cache (it used to run them on whichever server's connection came last)."""
    ctx = make_server_context(server_cert)
    cache = ctx.set_session_cache()
    start_server(ctx)
    with pytest.raises(ValueError, match="waits through the gevent driver: it cannot serve the threads driver"):
        pausetls.ThreadedTLSServer(("127.0.0.1", 0), echo_handler, context=ctx)
    assert cache.driver is gevent_driver


def test_serve_forever_on_a_listening_socket(pki: PKI, server_cert: Issued) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    server = pausetls.ThreadedTLSServer(listener, echo_handler, context=make_server_context(server_cert))
    assert server.server_port == listener.getsockname()[1]
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        assert wait_until(lambda: server.started)
        assert echo_once(server.server_port, stdlib_client_context(pki)).data == b"ping"
    finally:
        server.stop(timeout=1)
        serving.join(timeout=5)
    assert not serving.is_alive()
    assert listener.fileno() == -1  # the server closed it
