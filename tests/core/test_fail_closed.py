"""Fail-closed proofs: nothing but a verify callback's True lets a client certificate in.

A verification that is cancelled, times out or raises never completes the
handshake: the client gets no application data and the handler never runs.
A session does not carry a certificate past a callback that rejects it now,
and a session never crosses from one session id context into another.
Each holds under every driver (gevent, threads, asyncio); the callbacks pause
with their driver's pending results (`drivers.later`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from OpenSSL import crypto

import pausetls
from pausetls.sealing import SessionSealer, store_key
from pausetls.stores import MemoryStore

from conftest import make_server_context, stdlib_client_context, wait_until
from drivers import DRIVERS, later, never
from health import Watch
from pki import PKI, Issued
from reliability import connect_once, mutual_context, outcome

# -- a verification that never says yes --------------------------------------------------


def _stop_server(server: Any) -> None:
    server.stop(timeout=1)


INTERRUPTIONS: dict[str, tuple[dict[str, Any], float | None, Callable[[Any], None] | None, str]] = {
    # server options, the context's callback timeout, what the test does during the pause, the counter
    "cancelled": ({}, None, _stop_server, "handshakes_cancelled"),
    "callback-timeout": ({}, 0.2, None, "callback_errors"),
    "handshake-timeout": ({"handshake_timeout": 0.3}, None, None, "handshakes_timed_out"),
    "raises": ({}, None, None, "callback_errors"),
}


# a thread cannot be cut while its callback waits: a server stop or a handshake deadline waits for it
UNCUTTABLE_IN_A_THREAD = ("cancelled", "handshake-timeout")


@pytest.mark.parametrize(
    ("how", "driver"),
    [(how, driver) for how in INTERRUPTIONS for driver in DRIVERS
     if not (driver == "threads" and how in UNCUTTABLE_IN_A_THREAD)],
)  # fmt: skip
def test_an_interrupted_verification_never_lets_the_client_in(
    how: str,
    driver: str,
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start: Any,
    watch: Watch,
    tls_version: int,
) -> None:
    options, callback_timeout, during_pause, counter = INTERRUPTIONS[how]
    paused = threading.Event()  # set in the server's thread under threads and asyncio

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> Any:
        if depth == 0:
            paused.set()
            if how == "raises":
                return later(driver, error=RuntimeError("revocation service gone"))
            return never(driver)
        return True  # would accept anything, had it been allowed to finish

    ctx = mutual_context(pki, server_cert, tls_version, verify)
    ctx.set_callback_timeout(callback_timeout)
    server = start(ctx, **options)  # an echo server: a client that got in would read its b"ping" back
    since = watch.mark(server)
    client_ctx = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    client = gevent.spawn(outcome, server.server_port, client_ctx)
    assert wait_until(paused.is_set)
    if during_pause is not None:
        during_pause(server)
    answer = client.get(timeout=10)
    assert answer in (b"", "SSLError", "SSLEOFError", "ConnectionResetError"), answer  # never b"ping"
    assert server.stats.handshakes_completed == 0
    watch.one_failure(server, since, counter)


# -- a rejected certificate does not come back through a session ------------------------------


class Revocations:
    """A verify callback that rejects the leaves whose serial numbers are listed, and counts its calls."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.revoked: set[int] = set()
        self.leaf_calls = 0

    def __call__(self, conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> Any:
        if depth > 0:
            return bool(ok)
        self.leaf_calls += 1
        # as if asking a revocation service
        return later(self.driver, bool(ok) and x509.get_serial_number() not in self.revoked, delay=0.01)


@pytest.mark.parametrize("cache", ["store", "openssl"], ids=["set_session_cache", "openssl-default"])
def test_a_certificate_rejected_now_is_not_let_in_by_resuming_an_old_session(
    cache: str,
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    driver: str,
    start: Any,
    watch: Watch,
    tls_version: int,
) -> None:
    """OpenSSL does not run verification when a session resumes; the server must ask the callback again."""
    verify = Revocations(driver)
    ctx = mutual_context(pki, server_cert, tls_version, verify)
    if cache == "store":
        ctx.set_session_cache(MemoryStore())
    server = start(ctx)
    client = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    session, reused, answer = connect_once(server.server_port, client)
    assert (reused, answer) == (False, b"x")
    assert wait_until(lambda: connect_once(server.server_port, client, session)[1:] == (True, b"x"))
    calls = verify.leaf_calls  # a resumption asked the callback too, and was accepted

    verify.revoked.add(client_cert.cert.serial_number)
    since = watch.mark(server)
    _, _, answer = connect_once(server.server_port, client, session)
    assert answer == b"", "a revoked certificate got in through its old session"
    line = watch.one_failure(server, since, "verification_failures")
    assert "application verification failure" in line, line
    assert verify.leaf_calls == calls + 1
    _, reused, answer = connect_once(server.server_port, client)  # and of course no full handshake either
    assert answer == b"" and not reused


# -- sessions stay inside their session id context --------------------------------------------


def _refile(store: MemoryStore, sealer: SessionSealer, session_ids: list[bytes], how: str) -> None:
    """File tenant-a's sessions where tenant-b looks them up: the sealed blob as it is, or opened and
    sealed again for tenant-b's key (what a store holding the sealing key could do)."""
    for session_id in session_ids:
        key_a, key_b = (store_key("pausetls", sid_ctx, session_id) for sid_ctx in (b"tenant-a", b"tenant-b"))
        blob = store.get(key_a)
        assert blob is not None
        if how == "resealed":
            blob = sealer.seal(sealer.open(blob, key_a.encode()), key_b.encode())
        store.set(key_b, blob, 60)


@pytest.mark.parametrize("how", ["shared-store", "copied", "resealed"])
def test_sessions_never_resume_in_another_session_id_context(
    how: str, pki: PKI, server_cert: Issued, start: Any, tls_version: int
) -> None:
    """Two servers share one store and one sealer; their contexts have different session ids."""
    store, sealer = MemoryStore(), SessionSealer.generate()
    contexts = [make_server_context(server_cert, tls_version) for _ in range(2)]
    for ctx, sid_ctx in zip(contexts, (b"tenant-a", b"tenant-b"), strict=True):
        ctx.set_session_id(sid_ctx)
        ctx.set_session_cache(store, sealer=sealer)
    a, b = (start(ctx) for ctx in contexts)
    saved: list[bytes] = []  # tenant-a's session ids as the server files them
    backend = contexts[0].session_cache.backend
    save = backend.save

    def recording_save(sid_ctx: bytes, session_id: bytes, *rest: Any) -> None:
        saved.append(session_id)
        save(sid_ctx, session_id, *rest)

    backend.save = recording_save
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, _, _ = connect_once(a.server_port, client)
    assert wait_until(lambda: connect_once(a.server_port, client, session)[1])  # resumable where it was made
    if how != "shared-store":
        _refile(store, sealer, saved, how)
    _, reused, answer = connect_once(b.server_port, client, session)
    assert answer == b"x" and not reused
    stats = contexts[1].session_cache.stats
    assert stats.hits == 0 and stats.rejected == (0 if how == "shared-store" else 1)
