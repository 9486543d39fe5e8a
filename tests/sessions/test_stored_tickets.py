"""`StoredTicketKeys`: ticket keys kept in real memcached and Redis, fetched while the handshake pauses.

Two rings over one store stand for two nodes of a fleet: each has its own
process-local cache of keys, so a ticket from one is a decrypt miss on the
other, which fetches the key from the store inside the handshake.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import pytest

import pausetls
from pausetls.sealing import SessionSealer
from pausetls.stores import MemcachedStore, MemoryStore, store_from_url

from conftest import make_server_context, stdlib_client_context
from gates import GENEROUS, Gate, ThreadGate
from pki import PKI, Issued
from reliability import connect_once
from servers import DelayProxy, MemcachedServer

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)

CLIENTS = 200
THREADED_CLIENTS = 20


class GatedStore:
    """A real store whose gets first wait at *gate* (until the gate is open), as on a slow network."""

    def __init__(self, inner: Any, gate: Gate | None = None) -> None:
        self.inner, self.gate = inner, gate

    def bind(self, driver: Any) -> None:
        self.inner.bind(driver)

    def get(self, key: str) -> bytes | None:
        if self.gate is not None and not self.gate.opened:
            self.gate.arrive()
        return self.inner.get(key)  # type: ignore[no-any-return]

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        return self.inner.add(key, value, ttl)  # type: ignore[no-any-return]


@pytest.fixture(params=["memcached", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_server").url)


def node(start_server: Any, server_cert: Issued, version: int | None, keys: Any, **kwargs: Any) -> Any:
    ctx = make_server_context(server_cert, version)
    ctx.set_ticket_keys(keys)
    return start_server(ctx, **kwargs)


def resumed_together(a: Any, b: Any, pki: PKI, version: int, clients: int) -> list[bool]:
    """*clients* connections at once offering *b* the ticket one client got from *a*: which resumed."""
    client = stdlib_client_context(pki, version=version, cooperative=True)
    session, _, _ = connect_once(a.server_port, client)
    runs = [gevent.spawn(connect_once, b.server_port, client, session) for _ in range(clients)]
    gevent.joinall(runs, timeout=3 * GENEROUS, raise_error=True)
    return [run.value[1] for run in runs]


def test_nodes_sharing_a_store_resume_each_others_tickets(
    pki: PKI, server_cert: Issued, start_server: Any, store_url: str, tls_version: int
) -> None:
    master = SessionSealer.generate()
    a = node(start_server, server_cert, tls_version, pausetls.StoredTicketKeys(store_from_url(store_url), master))
    b_keys = pausetls.StoredTicketKeys(store_from_url(store_url), master)
    b = node(start_server, server_cert, tls_version, b_keys)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, _, _ = connect_once(a.server_port, client)
    _, reused, _ = connect_once(b.server_port, client, session)
    assert reused and b_keys.stats.resumed == 1 and b_keys.stats.store_errors == 0
    # another master key cannot open the stored key: a full handshake, not a failure
    c_keys = pausetls.StoredTicketKeys(store_from_url(store_url), SessionSealer.generate())
    c = node(start_server, server_cert, tls_version, c_keys)
    assert connect_once(c.server_port, client, session)[1:] == (False, b"x")
    assert c_keys.stats.store_errors >= 1 and c.stats.handshakes_failed == 0


def test_nodes_rotating_at_once_agree_on_one_key(memcached_server: MemcachedServer) -> None:
    """Two nodes that both find no key for the new epoch both make one; the atomic add keeps the first."""
    store = MemcachedStore(*memcached_server.address, driver=pausetls.gevent_driver)
    master = SessionSealer.generate()
    now = [1_000_000.0]
    rings = [pausetls.StoredTicketKeys(store, master, rotate_after=60, clock=lambda: now[0]) for _ in range(2)]
    first = rings[0].for_encryption(pausetls.gevent_driver)

    class Racing:  # the second node looked once before the first one's add landed
        missed = False

        def get(self, key: str) -> bytes | None:
            if not self.missed:
                self.missed = True
                return None
            return store.get(key)

        def add(self, key: str, value: bytes, ttl: int) -> bool:
            return store.add(key, value, ttl)

    rings[1].store = Racing()
    second = rings[1].for_encryption(pausetls.gevent_driver)
    assert first is not None and second is not None and first.name == second.name
    now[0] += 60  # the next epoch: a new key, made by whichever node asks first
    rotated = rings[1].for_encryption(pausetls.gevent_driver)
    assert rotated is not None and rotated.name != first.name
    assert rings[1].for_decryption(pausetls.gevent_driver, first.name) == (first, True)  # renewed
    now[0] += 60 * 5  # beyond max_age (three epochs): retired without asking the store
    assert rings[1].for_decryption(pausetls.gevent_driver, first.name) is None
    with pytest.raises(ValueError, match="at least rotate_after"):
        pausetls.StoredTicketKeys(store, master, rotate_after=60, max_age=30)
    store.close()


def test_200_resumptions_pause_together_on_a_slow_store(
    pki: PKI, server_cert: Issued, start_server: Any, memcached_server: MemcachedServer, tls_version: int
) -> None:
    master = SessionSealer.generate()
    issuer = pausetls.StoredTicketKeys(store_from_url(memcached_server.url), master)
    a = node(start_server, server_cert, tls_version, issuer)
    proxy = DelayProxy(memcached_server.address, delay=0.1)  # every request to memcached takes 100 ms more
    try:
        slow = MemcachedStore(*proxy.address, timeout=GENEROUS, max_pool_size=CLIENTS)
        gate = Gate(CLIENTS)  # each key fetch waits until all 200 are waiting at once
        keys = pausetls.StoredTicketKeys(GatedStore(slow, gate), master, timeout=2 * GENEROUS)
        b = node(start_server, server_cert, tls_version, keys, backlog=1024)
        reused = resumed_together(a, b, pki, tls_version, CLIENTS)
        assert gate.opened, gate.why()
        assert reused == [True] * CLIENTS
        assert keys.stats.resumed == CLIENTS and b.stats.resumed == CLIENTS
    finally:
        proxy.close()


def test_a_store_that_is_down_gives_full_handshakes_and_resumption_comes_back(
    pki: PKI, server_cert: Issued, start_server: Any, memcached_server: MemcachedServer, tls_version: int
) -> None:
    master = SessionSealer.generate()
    a = node(
        start_server, server_cert, tls_version, pausetls.StoredTicketKeys(store_from_url(memcached_server.url), master)
    )
    keys = pausetls.StoredTicketKeys(store_from_url(memcached_server.url, timeout=1), master, timeout=2)
    b = node(start_server, server_cert, tls_version, keys)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, _, _ = connect_once(a.server_port, client)

    memcached_server.stop()
    started = time.monotonic()
    _, reused, answer = connect_once(b.server_port, client, session)
    assert (reused, answer) == (False, b"x")
    assert time.monotonic() - started < GENEROUS
    assert keys.stats.store_errors >= 1 and keys.stats.issued == 0 and b.stats.handshakes_failed == 0

    memcached_server.start()  # empty again: the first node to ask makes the epoch's key
    session, _, _ = connect_once(b.server_port, client)
    assert connect_once(a.server_port, client, session)[1]


def test_a_ring_needs_a_store_with_an_atomic_add() -> None:
    class NoAdd:
        def get(self, key: str) -> bytes | None:
            return None

    with pytest.raises(TypeError, match="atomic add"):
        pausetls.StoredTicketKeys(NoAdd(), SessionSealer.generate())
    memory = MemoryStore()
    assert memory.add("k", b"1", 10) and not memory.add("k", b"2", 10) and memory.get("k") == b"1"


def test_under_the_threads_driver_lookups_block_their_threads_together(
    pki: PKI, server_cert: Issued, start_server: Any, store_url: str, tls_version: int
) -> None:
    master = SessionSealer.generate()
    a = node(start_server, server_cert, tls_version, pausetls.StoredTicketKeys(store_from_url(store_url), master))
    gate = ThreadGate(THREADED_CLIENTS)
    keys = pausetls.StoredTicketKeys(GatedStore(store_from_url(store_url), gate), master, timeout=2 * GENEROUS)
    b = node(start_server, server_cert, tls_version, keys, server_class=pausetls.ThreadedTLSServer)
    reused = resumed_together(a, b, pki, tls_version, THREADED_CLIENTS)
    assert gate.opened, gate.why()
    assert reused == [True] * THREADED_CLIENTS
    assert keys.driver is not None and keys.driver.name == "threads"


def test_a_ring_serving_one_driver_is_refused_by_a_server_of_another(
    server_cert: Issued, start_server: Any, memcached_server: MemcachedServer
) -> None:
    keys = pausetls.StoredTicketKeys(store_from_url(memcached_server.url), SessionSealer.generate())
    node(start_server, server_cert, None, keys)  # a gevent TLSServer binds it
    ctx = make_server_context(server_cert)
    ctx.set_ticket_keys(keys)
    with pytest.raises(ValueError, match="waits through the gevent driver"):
        pausetls.ThreadedTLSServer(("127.0.0.1", 0), lambda tls, address: None, context=ctx)
