"""The external session cache in one process: resumption, pausing lookups, sealing, faults."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import pytest

import pausetls
from pausetls.core.tls_socket import calling_connection
from pausetls.sealing import SessionSealer, store_key
from pausetls.stores import MemoryStore

from conftest import make_server_context, stdlib_client_context
from gates import GENEROUS, Gate
from pki import PKI, Issued

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)


class DelayedStore:
    """A real store whose lookups first wait for *delay* (the store path waits, as on a slow network)."""

    def __init__(self, inner: Any, delay: Callable[[], None]) -> None:
        self.inner = inner
        self.delay = delay

    def get(self, key: str) -> bytes | None:
        self.delay()
        return self.inner.get(key)  # type: ignore[no-any-return]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        self.inner.set(key, value, ttl)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()


class DownStore(MemoryStore):
    """A store whose lookups fail, as a store that is down does."""

    def get(self, key: str) -> bytes | None:
        raise pausetls.SessionStoreError("store unreachable: connection refused")


def connect_once(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None, timeout: float = GENEROUS
) -> tuple[ssl.SSLSession, bool]:
    """A CPython ssl client (gevent-cooperative): handshake, one echo, and the session to resume."""
    with gevent.socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"x")
            assert tls.recv(10) == b"x"  # TLS 1.3: the ticket arrives with the first read
            assert tls.session is not None
            return tls.session, tls.session_reused


def cached_context(server_cert: Issued, version: int, store: Any, **kwargs: Any) -> pausetls.Context:
    ctx = make_server_context(server_cert, version)
    ctx.set_session_cache(store, **kwargs)
    return ctx


def settle(cache: Any) -> None:
    """Wait for deferred session writes to land."""
    deadline = time.monotonic() + GENEROUS
    while cache._pending_writes and time.monotonic() < deadline:
        gevent.sleep(0.01)


def test_resumption_through_the_store(pki: PKI, server_cert: Issued, start_server: Any, tls_version: int) -> None:
    store = MemoryStore()
    ctx = cached_context(server_cert, tls_version, store)
    server = start_server(ctx)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, reused = connect_once(server.server_port, client)
    assert not reused
    settle(ctx.session_cache)
    assert len(store) == 1
    _, reused = connect_once(server.server_port, client, session)
    assert reused
    assert ctx.session_cache is not None
    assert ctx.session_cache.stats.hits == 1 and server.stats.resumed == 1


def test_the_default_store_is_in_memory(pki: PKI, server_cert: Issued, start_server: Any) -> None:
    ctx = make_server_context(server_cert)
    cache = ctx.set_session_cache()
    server = start_server(ctx)
    client = stdlib_client_context(pki, cooperative=True)
    session, _ = connect_once(server.server_port, client)
    settle(cache)
    assert connect_once(server.server_port, client, session)[1]


def test_500_concurrent_resumptions_pause_on_a_slow_store(
    pki: PKI, server_cert: Issued, start_server: Any, tls_version: int
) -> None:
    gate = Gate(500)  # each lookup waits in the store until all 500 are waiting at once
    store = DelayedStore(MemoryStore(), lambda: None)
    ctx = cached_context(server_cert, tls_version, store, timeout=2 * GENEROUS)
    server = start_server(ctx, backlog=1024)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, _ = connect_once(server.server_port, client)
    settle(ctx.session_cache)
    store.delay = gate.arrive
    runs = [gevent.spawn(connect_once, server.server_port, client, session) for _ in range(500)]
    gevent.joinall(runs, timeout=3 * GENEROUS, raise_error=True)
    assert gate.opened, gate.why()
    assert [run.value[1] for run in runs] == [True] * 500, "every client resumed"


def test_a_store_that_is_down_gives_full_handshakes(
    pki: PKI, server_cert: Issued, start_server: Any, tls_version: int
) -> None:
    ctx = cached_context(server_cert, tls_version, DownStore())
    server = start_server(ctx)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, _ = connect_once(server.server_port, client)
    _, reused = connect_once(server.server_port, client, session)
    assert not reused
    assert ctx.session_cache is not None and ctx.session_cache.stats.store_errors == 1
    assert server.stats.handshakes_failed == 0


def test_a_store_slower_than_the_timeout_gives_a_full_handshake_in_time(
    pki: PKI, server_cert: Issued, start_server: Any
) -> None:
    never = gevent.event.Event()  # a store that does not answer within the test
    store = DelayedStore(MemoryStore(), lambda: never.wait(2 * GENEROUS))
    ctx = cached_context(server_cert, pausetls.TLS1_2_VERSION, store, timeout=0.2)
    server = start_server(ctx)
    client = stdlib_client_context(pki, cooperative=True)
    session, _ = connect_once(server.server_port, client)
    assert ctx.session_cache is not None
    settle(ctx.session_cache)
    # (a TLS 1.3-capable client sends a random legacy session id even when new: that lookup times out too)
    timeouts = ctx.session_cache.stats.timeouts
    started = time.monotonic()
    _, reused = connect_once(server.server_port, client, session)
    assert not reused and time.monotonic() - started < GENEROUS  # the 0.2 s timeout ended it, not the store
    assert ctx.session_cache.stats.timeouts == timeouts + 1


def _only_key(store: MemoryStore) -> str:
    keys = list(store._entries)  # the one session stored
    assert len(keys) == 1
    return str(keys[0])


@pytest.mark.parametrize("damage", ["garbage", "tampered", "foreign-key", "moved"])
def test_blobs_that_are_not_ours_are_misses(
    pki: PKI, server_cert: Issued, start_server: Any, damage: str, tls_version: int
) -> None:
    store = MemoryStore()
    ctx = cached_context(server_cert, tls_version, store)
    server = start_server(ctx)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, _ = connect_once(server.server_port, client)
    settle(ctx.session_cache)
    key = _only_key(store)
    blob = store.get(key)
    assert blob is not None
    if damage == "garbage":
        store.set(key, b"\x00garbage from someone else", 60)
    elif damage == "tampered":
        store.set(key, blob[:-1] + bytes([blob[-1] ^ 1]), 60)
    elif damage == "foreign-key":
        other = SessionSealer.generate()
        store.set(key, other.seal(b"a session sealed elsewhere", key.encode()), 60)
    else:  # a valid blob filed under another session's key
        store.delete(key)
        moved = store_key("pausetls", b"pausetls:verify=0", b"another session id")
        store.set(moved, blob, 60)
    _, reused = connect_once(server.server_port, client, session)
    assert not reused
    assert server.stats.handshakes_failed == 0
    stats = ctx.session_cache.stats if ctx.session_cache else None
    assert stats is not None and stats.misses == 1
    if damage != "moved":
        assert stats.rejected == 1


def test_a_memory_store_bounded_in_bytes_keeps_the_newest_sessions(
    pki: PKI, server_cert: Issued, start_server: Any, tls_version: int
) -> None:
    """Many real handshakes: the store never holds more than max_bytes, and the newest sessions resume."""
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    probe = MemoryStore()  # one session's size, as this configuration seals it
    probe_ctx = cached_context(server_cert, tls_version, probe)
    connect_once(start_server(probe_ctx).server_port, client)
    settle(probe_ctx.session_cache)
    assert len(probe) == 1
    size = probe.bytes_used

    store = MemoryStore(max_bytes=3 * size + size // 2)  # room for three sessions, not four
    ctx = cached_context(server_cert, tls_version, store)
    server = start_server(ctx)
    sessions = []
    for _ in range(10):
        session, reused = connect_once(server.server_port, client)
        assert not reused
        sessions.append(session)
        settle(ctx.session_cache)
        assert store.bytes_used <= store.max_bytes
    assert len(store) == 3 and store.evicted == 7 and store.oversized == 0
    assert connect_once(server.server_port, client, sessions[-1])[1]  # the newest resumes
    assert not connect_once(server.server_port, client, sessions[0])[1]  # the oldest was evicted
    settle(ctx.session_cache)
    assert store.bytes_used <= store.max_bytes


def test_a_session_without_client_auth_does_not_resume_where_it_is_required(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any, tls_version: int
) -> None:
    store, sealer = MemoryStore(), SessionSealer.generate()
    open_ctx = cached_context(server_cert, tls_version, store, sealer=sealer)
    strict_ctx = cached_context(server_cert, tls_version, store, sealer=sealer)
    strict_ctx.load_verify_locations(pki.ca_path)
    strict_ctx.set_verify(pausetls.VERIFY_PEER | pausetls.VERIFY_FAIL_IF_NO_PEER_CERT)
    open_server, strict_server = start_server(open_ctx), start_server(strict_ctx)
    client = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    session, _ = connect_once(open_server.server_port, client)
    settle(open_ctx.session_cache)
    assert connect_once(open_server.server_port, client, session)[1]  # resumable where it was made
    _, reused = connect_once(strict_server.server_port, client, session)
    assert not reused
    assert strict_server.stats.handshakes_completed == 1


def test_the_store_never_holds_the_master_secret(
    pki: PKI, server_cert: Issued, start_server: Any, tls_version: int
) -> None:
    secrets: list[bytes] = []

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        tls.sendall(tls.recv(10))
        key = tls.master_key()
        assert key
        secrets.append(key)

    store = MemoryStore()
    ctx = cached_context(server_cert, tls_version, store)
    server = start_server(ctx, handler)
    connect_once(server.server_port, stdlib_client_context(pki, version=tls_version, cooperative=True))
    settle(ctx.session_cache)
    raw = b"".join(value for _, value in store._entries.values())
    assert raw and secrets
    assert secrets[0] not in raw


def test_sessions_survive_key_rotation_until_the_old_key_is_retired(
    pki: PKI, server_cert: Issued, start_server: Any
) -> None:
    sealer = SessionSealer.generate()
    ctx = cached_context(server_cert, pausetls.TLS1_2_VERSION, MemoryStore(), sealer=sealer)
    server = start_server(ctx)
    client = stdlib_client_context(pki, cooperative=True)
    session, _ = connect_once(server.server_port, client)
    settle(ctx.session_cache)
    sealer.rotate(2, bytes(range(32)))
    assert connect_once(server.server_port, client, session)[1]
    sealer.retire(1)
    assert not connect_once(server.server_port, client, session)[1]


def test_user_session_callbacks_get_new_remove(pki: PKI, server_cert: Issued, start_server: Any) -> None:
    saved: dict[bytes, bytes] = {}

    def get(session_id: bytes) -> bytes | None:
        gevent.sleep(0.05)  # a network round trip
        return saved.get(session_id)

    ctx = make_server_context(server_cert, pausetls.TLS1_3_VERSION)
    cache = ctx.set_session_callbacks(get=get, new=saved.__setitem__, remove=saved.pop)
    server = start_server(ctx)
    client = stdlib_client_context(pki, cooperative=True)
    session, _ = connect_once(server.server_port, client)
    settle(cache)
    assert len(saved) == 1
    assert connect_once(server.server_port, client, session)[1]
    assert cache.stats.hits == 1


def test_a_session_openssl_discards_is_removed_later_outside_openssl(
    pki: PKI, server_cert: Issued, start_server: Any, tls_version: int
) -> None:
    saved: dict[bytes, bytes] = {}
    removed: list[tuple[bytes, bool]] = []

    def remove(session_id: bytes) -> None:
        removed.append((session_id, pausetls.in_job()))  # runs in its own greenlet, not inside OpenSSL
        gevent.sleep(0.01)  # and so may block
        saved.pop(session_id, None)

    ctx = make_server_context(server_cert, tls_version)
    # without keep_sessions_on_eof, a client leaving without close_notify (CPython's ssl) makes
    # OpenSSL discard the session, calling remove under its lock
    cache = ctx.set_session_callbacks(get=saved.get, new=saved.__setitem__, remove=remove, keep_sessions_on_eof=False)
    server = start_server(ctx)
    connect_once(server.server_port, stdlib_client_context(pki, version=tls_version, cooperative=True))
    deadline = time.monotonic() + GENEROUS
    while (not removed or cache._pending_writes) and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert removed and all(not in_job for _, in_job in removed)
    assert saved == {} and cache.stats.deleted >= 1


def test_a_store_that_never_waits_has_the_session_before_the_client_can_offer_it(
    pki: PKI, server_cert: Issued, driver: str, start: Any, tls_version: int
) -> None:
    """MemoryStore is written inside the handshake: a client that reconnects at once resumes, every time."""
    written_in_handshake: list[bool] = []

    class WatchedStore(MemoryStore):
        def set(self, key: str, value: bytes, ttl: int) -> None:
            # inside the connection's OpenSSL call; a deferred write runs after it, in a greenlet of its own
            written_in_handshake.append(calling_connection() is not None)
            super().set(key, value, ttl)

    ctx = make_server_context(server_cert, tls_version)
    cache = ctx.set_session_cache(WatchedStore())
    server = start(ctx)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, reused = connect_once(server.server_port, client)
    assert not reused and written_in_handshake == [True]
    for _ in range(3):
        session, reused = connect_once(server.server_port, client, session)
        assert reused
    assert cache.stats.hits == 3 and cache.stats.misses == 0
