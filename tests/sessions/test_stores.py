"""Session stores: the in-memory LRU, memcached and Redis, against real servers on loopback.

The test process is not monkey-patched: a store that used a blocking stdlib
socket would freeze every other greenlet while it waits, which is what the
cooperation tests detect (and check they would detect, with the thread driver's blocking sockets).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gevent
import pytest

from pausetls.core.errors import SessionStoreError
from pausetls.drivers.asyncio import greenlet_spawn
from pausetls.drivers.gevent import gevent_driver
from pausetls.drivers.threads import thread_driver
from pausetls.stores import MemcachedStore, MemoryStore, RedisStore, SessionStore, store_from_url
from pausetls.stores.asyncio_stores import AsyncioMemcachedStore

from conftest import wait_until
from gates import GENEROUS
from servers import (  # noqa: F401 - the fixtures are used by name
    DelayProxy,
    RedisServer,
    ScriptedServer,
    ServerProcess,
    free_port,
    memcached_server,
    redis_server,
    require_binary,
)

NETWORKED = ["memcached", "redis"]
VALUES = [b"", b"\x00", b"\x00\xff\x00\r\nEND\r\n", os.urandom(16 * 1024)]
BAD_KEYS: list[Any] = ["", "a b", "x" * 201, "clé", "a\nb", "a\x00b", "tab\there", b"bytes", None, 42]


def make_store(kind: str, address: tuple[str, int], *, pool_size: int = 4, **kwargs: Any) -> SessionStore:
    kwargs.setdefault("driver", gevent_driver)  # these tests run on gevent
    if kind == "memcached":
        return MemcachedStore(*address, max_pool_size=pool_size, **kwargs)
    return RedisStore(*address, max_connections=pool_size, **kwargs)


@pytest.fixture(params=["memory", *NETWORKED])
def store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    """A fresh store of each kind (the networked ones on their own server)."""
    if request.param == "memory":
        made: SessionStore = MemoryStore()
    else:
        made = make_store(request.param, request.getfixturevalue(f"{request.param}_server").address)
    yield made
    made.close()


@pytest.fixture(params=["memory", *NETWORKED])
def offline_store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    """A store of each kind with no server: argument checks must fail before any I/O."""
    made = MemoryStore() if request.param == "memory" else make_store(request.param, ("127.0.0.1", free_port()))
    yield made
    made.close()


@pytest.fixture(params=NETWORKED)
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServerProcess, SessionStore]]:
    """(kind, its running server, a store on it)."""
    server: ServerProcess = request.getfixturevalue(f"{request.param}_server")
    made = make_store(request.param, server.address)
    yield request.param, server, made
    made.close()


def all_operations(store: SessionStore) -> list[Callable[[], object]]:
    return [lambda: store.get("k"), lambda: store.set("k", b"v", 60), lambda: store.delete("k")]


# --- the contract, for every store -------------------------------------------------------------


def test_is_a_session_store(store: SessionStore) -> None:
    assert isinstance(store, SessionStore)


@pytest.mark.parametrize("value", VALUES, ids=["empty", "nul", "protocol-bytes", "16KiB"])
def test_round_trip(store: SessionStore, value: bytes) -> None:
    store.set("pausetls:k1", value, 60)
    assert store.get("pausetls:k1") == value
    store.delete("pausetls:k1")
    assert store.get("pausetls:k1") is None


def test_overwrite_and_independent_keys(store: SessionStore) -> None:
    key = "k" * 200  # the longest allowed
    store.set(key, b"one", 60)
    store.set("other", b"two", 60)
    store.set(key, b"three", 60)
    assert (store.get(key), store.get("other")) == (b"three", b"two")


def test_add_stores_only_an_absent_key(store: Any) -> None:
    """What `StoredTicketKeys` rotates with: of two nodes adding the same key, one wins."""
    assert store.add("epoch", b"first", 60) is True
    assert store.add("epoch", b"second", 60) is False
    assert store.get("epoch") == b"first"
    store.delete("epoch")
    assert store.add("epoch", b"third", 60) is True and store.get("epoch") == b"third"


def test_missing_key(store: SessionStore) -> None:
    assert store.get("never-set") is None
    store.delete("never-set")  # deleting a missing key is fine


def test_ttl_expiry(store: SessionStore) -> None:
    store.set("short", b"v", 1)
    store.set("long", b"w", 60)
    assert store.get("short") == b"v"
    # memcached's clock ticks once a second, so expiry lands 0-1 s late there.
    assert wait_until(lambda: store.get("short") is None, timeout=3)
    assert store.get("long") == b"w"


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_invalid_keys(offline_store: SessionStore, key: Any) -> None:
    with pytest.raises(ValueError, match="key"):
        offline_store.set(key, b"v", 60)
    with pytest.raises(ValueError, match="key"):
        offline_store.get(key)
    with pytest.raises(ValueError, match="key"):
        offline_store.delete(key)


def test_invalid_values_and_ttls(store: SessionStore) -> None:
    with pytest.raises(TypeError, match="bytes"):
        store.set("k", "text", 60)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        store.set("k", bytearray(b"v"), 60)  # type: ignore[arg-type]
    for ttl in (0, -1):
        with pytest.raises(ValueError, match="ttl"):
            store.set("k", b"v", ttl)
    bad_ttls: list[Any] = [1.5, True, "60"]
    for bad_ttl in bad_ttls:
        with pytest.raises(TypeError, match="ttl"):
            store.set("k", b"v", bad_ttl)
    assert store.get("k") is None


def test_closed_store_raises(store: SessionStore) -> None:
    store.set("k", b"v", 60)
    store.close()
    store.close()  # idempotent
    for operation in all_operations(store):
        with pytest.raises(SessionStoreError, match="closed"):
            operation()


# --- the memory store ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_lru_eviction_and_bound() -> None:
    store = MemoryStore(max_entries=3)
    for key in ("a", "b", "c"):
        store.set(key, key.encode(), 60)
    assert store.get("a") == b"a"  # "a" is now the most recently used; "b" the least
    store.set("d", b"d", 60)
    assert len(store) == 3
    assert store.get("b") is None
    assert [store.get(key) for key in ("a", "c", "d")] == [b"a", b"c", b"d"]
    store.set("c", b"c2", 60)  # overwriting refreshes too: "a" is evicted next
    store.set("e", b"e", 60)
    assert store.get("a") is None and store.get("c") == b"c2"
    for i in range(100):
        store.set(f"many{i}", b"x", 60)
    assert len(store) == 3


def test_memory_ttl_on_its_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=2, clock=clock)
    store.set("k", b"v", 5)
    clock.now += 4.999
    assert store.get("k") == b"v"
    clock.now += 0.001
    assert len(store) == 1
    assert store.get("k") is None  # expired: dropped on access
    assert len(store) == 0
    store.set("old", b"1", 1)
    store.set("new", b"2", 60)
    clock.now += 2
    store.set("newer", b"3", 60)  # the expired, least recently used entry makes room
    assert len(store) == 2 and store.get("new") == b"2" and store.get("newer") == b"3"


def test_memory_store_threads() -> None:
    store = MemoryStore(max_entries=50)

    def hammer(n: int) -> None:
        for i in range(3000):
            key = f"t{n}-{i % 80}"
            store.set(key, key.encode(), 60)
            assert store.get(key) in (None, key.encode())  # None: another thread's sets evicted it
            if i % 7 == 0:
                store.delete(key)

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(hammer, n) for n in range(4)]:
            future.result(timeout=30)
    assert len(store) <= 50


def test_memory_max_entries_checked() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_entries"):
            MemoryStore(bad)  # type: ignore[arg-type]


def test_memory_max_bytes_evicts_least_recently_used_by_size() -> None:
    store = MemoryStore(max_bytes=100)  # keys + values; each entry below is 2 + 28 = 30 bytes
    for key in ("k1", "k2", "k3"):
        store.set(key, b"v" * 28, 60)
    assert store.bytes_used == 90 and len(store) == 3
    assert store.get("k1") is not None  # "k2" is now the least recently used
    store.set("k4", b"v" * 28, 60)
    assert store.bytes_used == 90 and store.evicted == 1
    assert store.get("k2") is None and all(store.get(k) for k in ("k1", "k3", "k4"))
    store.set("k1", b"w" * 58, 60)  # overwriting with a bigger value evicts as much as needed
    assert store.bytes_used <= 100 and store.get("k1") == b"w" * 58
    assert store.get("k3") is None and store.get("k4") == b"v" * 28 and store.bytes_used == 90
    store.delete("k4")
    assert store.bytes_used == 60
    for i in range(200):
        store.set(f"many{i}", bytes(i % 50), 60)
        assert store.bytes_used <= 100
    assert store.bytes_used == sum(len(k) + len(v) for k, (_, v) in store._entries.items())


def test_memory_an_entry_larger_than_max_bytes_is_not_stored_and_counted() -> None:
    store = MemoryStore(max_bytes=64)
    store.set("small", b"s" * 10, 60)
    store.set("big", b"old", 60)
    store.set("big", b"b" * 62, 60)  # 3 + 62 > 64: not stored, and the older value is gone too
    assert store.get("big") is None
    assert store.oversized == 1 and store.evicted == 0
    assert store.get("small") == b"s" * 10 and store.bytes_used == 15
    store.set("edge", b"e" * 60, 60)  # exactly 64: stored, evicting "small"
    assert store.get("edge") == b"e" * 60 and store.get("small") is None and store.bytes_used == 64


def test_memory_expired_entries_give_their_bytes_back() -> None:
    clock = FakeClock()
    store = MemoryStore(max_bytes=1000, clock=clock)
    store.set("k", b"v" * 99, 5)
    clock.now += 5
    assert store.get("k") is None and store.bytes_used == 0


def test_memory_max_bytes_checked() -> None:
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="max_bytes"):
            MemoryStore(max_bytes=bad)  # type: ignore[arg-type]


# --- networked stores: failures and recovery ----------------------------------------------------


def test_store_down_then_back(backend: tuple[str, ServerProcess, SessionStore]) -> None:
    kind, server, store = backend
    store.set("k", b"v", 60)  # a pooled connection now exists
    server.stop()
    # First on the pooled connection the kill left dead, then on fresh connects.
    for operation in [*all_operations(store)[:1], *all_operations(store)]:
        start = time.monotonic()
        with pytest.raises(SessionStoreError) as info:
            operation()
        assert time.monotonic() - start < 2
        assert f"{kind} at 127.0.0.1:{server.port}" in str(info.value)
        assert info.value.__cause__ is not None
    server.start()  # same port, empty
    assert store.get("k") is None  # the very first operation works: no error per stale connection
    store.set("k", b"back", 60)
    assert store.get("k") == b"back"


def test_restart_while_idle(backend: tuple[str, ServerProcess, SessionStore]) -> None:
    _, server, store = backend
    store.set("k", b"v", 60)
    server.stop()
    server.start()  # the pooled connection is dead, and nothing has noticed yet
    assert store.get("k") is None  # it is noticed before use: no error on the first operation
    store.set("k", b"v", 60)
    assert store.get("k") == b"v"


@pytest.mark.parametrize("kind", NETWORKED)
def test_nothing_listening(kind: str) -> None:
    store = make_store(kind, ("127.0.0.1", free_port()))
    with pytest.raises(SessionStoreError, match=f"{kind} at 127.0.0.1:.*refused"):
        store.get("k")
    store.close()


@pytest.mark.parametrize("kind", NETWORKED)
def test_server_that_never_answers_times_out(kind: str) -> None:
    silent = ScriptedServer(reply=None)
    store = make_store(kind, silent.address, timeout=0.2)
    try:
        for operation in all_operations(store):
            start = time.monotonic()
            with pytest.raises(SessionStoreError, match=r"(?i)timeout|timed out"):
                operation()
            assert 0.15 < time.monotonic() - start < GENEROUS  # at the 0.2 s timeout, not never
    finally:
        store.close()
        silent.close()


@pytest.mark.parametrize("kind", NETWORKED)
@pytest.mark.parametrize("reply", [b"HELLO THERE\r\n", b"\x00\xff garbage", b"VALUE k 0 99999\r\nshort"])
def test_garbage_reply(kind: str, reply: bytes) -> None:
    liar = ScriptedServer(reply=reply)
    store = make_store(kind, liar.address, timeout=0.15)  # replies without a line end end in a timeout
    try:
        for operation in all_operations(store):
            with pytest.raises(SessionStoreError, match=kind) as info:
                operation()
            assert info.value.__cause__ is not None
    finally:
        store.close()
        liar.close()


@pytest.mark.parametrize("bridge", ["gevent", "asyncio"])
def test_memcached_ttl_over_30_days(request: pytest.FixtureRequest, bridge: str) -> None:
    # memcached takes an expiry above 30 days as a Unix time: sent raw it would be 1970, already past.
    address = request.getfixturevalue("memcached_server").address
    month = 31 * 24 * 3600

    def set_add_get(store: Any) -> tuple[bool, bytes | None, bytes | None]:
        store.set("long", b"v", month)
        added = store.add("long-added", b"a", month)
        return added, store.get("long"), store.get("long-added")

    if bridge == "gevent":
        store = MemcachedStore(*address, driver=gevent_driver)
        assert set_add_get(store) == (True, b"v", b"a")
        store.close()
        return

    async def main() -> tuple[bool, bytes | None, bytes | None]:
        store = AsyncioMemcachedStore(*address)
        try:
            return await greenlet_spawn(set_add_get, store)  # type: ignore[no-any-return]
        finally:
            await store.aclose()

    assert asyncio.run(main()) == (True, b"v", b"a")


def test_redis_databases_are_separate(request: pytest.FixtureRequest) -> None:
    server: ServerProcess = request.getfixturevalue("redis_server")
    db0 = RedisStore(*server.address, driver=gevent_driver)
    db1 = store_from_url(f"{server.url}/1", driver=gevent_driver)
    db1.set("k", b"in db 1", 60)
    assert db0.get("k") is None and db1.get("k") == b"in db 1"
    db0.close()
    db1.close()


def test_redis_password() -> None:
    server = RedisServer(require_binary("redis-server"), password="s3cret")
    server.start()
    try:
        good = store_from_url(f"redis://:s3cret@127.0.0.1:{server.port}/0", driver=gevent_driver)
        good.set("k", b"v", 60)
        assert good.get("k") == b"v"
        good.close()
        for url in (server.url, f"redis://:wrong@127.0.0.1:{server.port}"):
            bad = store_from_url(url, driver=gevent_driver)
            with pytest.raises(SessionStoreError) as info:
                bad.get("k")
            assert "s3cret" not in str(info.value) and "wrong" not in str(info.value)
            bad.close()
    finally:
        server.cleanup()


# --- networked stores: cooperation with gevent ----------------------------------------------------


def ticks_during(fn: Callable[[], Any], on_tick: Callable[[int], Any]) -> tuple[Any, int, float]:
    """Run *fn* in one greenlet while another ticks every 10 ms, calling *on_tick(ticks)*:
    (result, ticks meanwhile, seconds)."""
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        while True:
            gevent.sleep(0.01)
            ticks += 1
            on_tick(ticks)

    ticker = gevent.spawn(tick)
    gevent.sleep(0)  # the ticker is waiting on its first sleep before the work starts
    start = time.monotonic()
    worker = gevent.spawn(fn)
    try:
        worker.join(timeout=2 * GENEROUS)
        elapsed = time.monotonic() - start
        counted = ticks
    finally:
        ticker.kill()
        worker.kill()
    return worker.get(block=False), counted, elapsed


@pytest.mark.parametrize("driver", [gevent_driver, thread_driver], ids=["cooperative", "blocking-control"])
def test_a_slow_store_lets_other_greenlets_run(backend: tuple[str, ServerProcess, SessionStore], driver: Any) -> None:
    kind, server, direct = backend
    cooperative = driver is gevent_driver
    direct.set("k", b"v", 60)
    # the proxy holds the request until the other greenlet has ticked 10 times: only a store that lets
    # the hub run gets its answer before the proxy's own delay (which a blocked hub must sit out)
    released = threading.Event()
    proxy = DelayProxy(server.address, delay=GENEROUS if cooperative else 0.3, release=released)
    slow = make_store(kind, proxy.address, timeout=2 * GENEROUS, driver=driver)
    try:
        value, ticks, elapsed = ticks_during(lambda: slow.get("k"), lambda ticks: ticks == 10 and released.set())
        assert value == b"v"
        if cooperative:
            assert ticks >= 10, f"the ticker advanced {ticks} times in {elapsed:.2f} s: the store blocked the hub"
        else:  # the control: stdlib sockets freeze the hub, and the test sees it
            assert ticks <= 2, f"a blocking store let the ticker advance {ticks} times"
    finally:
        slow.close()
        proxy.close()


def test_more_greenlets_than_connections_wait_their_turn(backend: tuple[str, ServerProcess, SessionStore]) -> None:
    kind, server, _ = backend
    proxy = DelayProxy(server.address, delay=0.02)
    small = make_store(kind, proxy.address, timeout=2.0, pool_size=2)

    def one(n: int) -> bytes | None:
        small.set(f"g{n}", b"%d" % n, 60)
        return small.get(f"g{n}")

    try:
        workers = [gevent.spawn(one, n) for n in range(20)]
        gevent.joinall(workers, timeout=10)
        assert [worker.get(block=False) for worker in workers] == [b"%d" % n for n in range(20)]
    finally:
        small.close()
        proxy.close()


def test_a_store_interrupted_by_a_timeout_stays_usable(backend: tuple[str, ServerProcess, SessionStore]) -> None:
    kind, server, direct = backend
    direct.set("k", b"v", 60)
    proxy = DelayProxy(server.address, delay=0.3)
    # One connection only: a slot leaked by the interrupted call would make the next call fail.
    slow = make_store(kind, proxy.address, timeout=2.0, pool_size=1)
    try:
        for _ in range(2):
            with pytest.raises(gevent.Timeout), gevent.Timeout(0.05):
                slow.get("k")
        proxy.delay = 0
        assert slow.get("k") == b"v"  # not a stale reply to the interrupted request
        slow.set("k", b"w", 60)
        assert slow.get("k") == b"w"
    finally:
        slow.close()
        proxy.close()


# --- store_from_url --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "attributes"),
    [
        ("memory://", MemoryStore, {"max_entries": 100_000}),
        ("memory://?max_entries=10", MemoryStore, {"max_entries": 10}),
        ("memory://?max_bytes=4096", MemoryStore, {"max_entries": 100_000, "max_bytes": 4096}),
        ("memory://?max_bytes=4096&max_entries=7", MemoryStore, {"max_entries": 7, "max_bytes": 4096}),
        ("memory://", MemoryStore, {"max_bytes": 64 * 1024 * 1024}),
        ("MEMORY://", MemoryStore, {"max_entries": 100_000}),
        ("memcached://cache.example", MemcachedStore, {"host": "cache.example", "port": 11211}),
        ("memcached://10.0.0.5:11311", MemcachedStore, {"host": "10.0.0.5", "port": 11311}),
        ("memcached://10.0.0.5:11311/", MemcachedStore, {"host": "10.0.0.5", "port": 11311}),
        ("memcached://[::1]:11212", MemcachedStore, {"host": "::1", "port": 11212, "address": "[::1]:11212"}),
        ("redis://r.example", RedisStore, {"host": "r.example", "port": 6379, "db": 0}),
        ("redis://r.example:6380/3", RedisStore, {"host": "r.example", "port": 6380, "db": 3}),
        ("redis://:pa%40ss@r.example/2", RedisStore, {"host": "r.example", "port": 6379, "db": 2}),
        ("redis://[::1]/1", RedisStore, {"host": "::1", "port": 6379, "db": 1, "address": "[::1]:6379/1"}),
    ],
)
def test_store_from_url(url: str, kind: type, attributes: dict[str, Any]) -> None:
    made = store_from_url(url, timeout=0.25, driver=thread_driver)  # nothing connects yet
    if kind is not MemoryStore:
        attributes = {**attributes, "timeout": 0.25, "driver": thread_driver}
    try:
        assert isinstance(made, kind)
        for name, value in attributes.items():
            assert getattr(made, name) == value, name
    finally:
        made.close()


def test_store_from_url_password_reaches_redis() -> None:
    made = store_from_url("redis://:pa%40ss@r.example/2", driver=thread_driver)
    assert isinstance(made, RedisStore)
    assert made._pool.connection_kwargs["password"] == "pa@ss"
    made.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "accepted are memory://"),
        ("127.0.0.1:11211", "accepted are memory://"),
        ("rediss://host", "accepted are memory://.*memcached://.*redis://"),
        ("http://host", "unsupported"),
        ("memory://host", "no host or path"),
        ("memory://?max_entries=0", "positive integer"),
        ("memory://?max_entries=ten", "positive integer"),
        ("memory://?max_bytes=0", "max_bytes must be a positive integer"),
        ("memory://?max_bytes=1e6", "max_bytes must be a positive integer"),
        ("memory://?max_bytes=", "max_bytes must be a positive integer"),
        ("memory://?max_entry=10", "unknown option"),
        ("memory://?max_entries=1&max_entries=2", "repeated"),
        ("memcached://", "no host"),
        ("memcached://host:99999", "bad port"),
        ("memcached://host:port", "bad port"),
        ("memcached://host:0", "port 0"),
        ("memcached://[::1", "malformed"),
        ("memcached://user:pw@host", "no user"),
        ("memcached://host/path", "no path"),
        ("memcached://host?timeout=1", "no query"),
        ("redis://host/x", "database number"),
        ("redis://host/1/2", "database number"),
        ("redis://user:pw@host", "only a password"),
        ("redis://host?db=1", "no query"),
    ],
)
def test_store_from_url_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store_from_url(url)


def test_store_from_url_errors_hide_the_password() -> None:
    with pytest.raises(ValueError) as info:
        store_from_url("redis://:topsecret@host/notadb")
    assert "topsecret" not in str(info.value) and "***" in str(info.value)
