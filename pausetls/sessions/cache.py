"""An external server session cache: OpenSSL's get/new/remove callbacks over a store.

OpenSSL's own cache lives in one process.  Here the server's session cache is
a `SessionStore` (memory, memcached, Redis) or three user functions, and the
*get* side may wait on the network: it runs inside the handshake's job, so the
handshake pauses while every other connection goes on.  What each callback
may do follows ``../shared/DESIGN.md``:

* get (``SSL_CTX_sess_set_get_cb``): pausable.  Bounded by ``timeout``; any
  failure -- store down or slow, garbage, a blob that does not open, a session
  for another id or context -- is a *miss* (a full handshake), counted and
  logged at debug level, never an error for the client.
* new (``SSL_CTX_sess_set_new_cb``): the DER is copied and written from
  another greenlet or thread (`Driver.defer` of the driver the cache is
  bound to); OpenSSL keeps its reference.  A store that never waits
  (``writes_never_wait``, the in-memory one) is written at once instead, so a
  client that reconnects straight away finds its session.
* remove (``SSL_CTX_sess_set_remove_cb``): may run with ``ctx->lock`` held,
  so it never pauses: the id is copied and deleted later.

Writes are bounded (``max_pending_writes``); beyond it they are dropped and
counted, because a session that is not stored only costs a full handshake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..core._job import current_job, pause
from .sealing import SealError, SessionSealer, store_key
from .stores._common import check_rebind

if TYPE_CHECKING:
    from ..core._driver import Driver
    from .stores import SessionStore

__all__ = ["SessionCache", "SessionCacheStats", "SessionBackend", "StoreBackend", "CallbackBackend"]

log = logging.getLogger("pausetls.sessions")


@dataclass
class SessionCacheStats:
    """Counters of one session cache; ``store_seconds`` sums the time lookups waited on the store."""

    lookups: int = 0
    hits: int = 0
    misses: int = 0
    store_errors: int = 0
    timeouts: int = 0
    rejected: int = 0
    stored: int = 0
    store_failures: int = 0
    deleted: int = 0
    dropped_writes: int = 0
    store_seconds: float = 0.0
    slowest_lookup: float = 0.0

    def as_dict(self) -> dict[str, float]:
        values = asdict(self)
        values["mean_lookup_ms"] = 1000 * self.store_seconds / self.lookups if self.lookups else 0.0
        return values


class SessionBackend(Protocol):
    """Where sessions (DER of ``SSL_SESSION``) go; calls may block on the driver's loop, unless
    ``writes_never_wait``: then a new session is saved inline, inside the handshake."""

    writes_never_wait: bool

    def bind(self, driver: Driver) -> None: ...

    def load(self, sid_ctx: bytes, session_id: bytes) -> bytes | None: ...

    def save(self, sid_ctx: bytes, session_id: bytes, der: bytes, ttl: int) -> None: ...

    def forget(self, sid_ctx: bytes, session_id: bytes) -> None: ...


class StoreBackend:
    """Sessions sealed with a `SessionSealer`, filed in a `SessionStore` under `store_key`."""

    def __init__(self, store: SessionStore, sealer: SessionSealer, namespace: str = "pausetls") -> None:
        self.store = store
        self.sealer = sealer
        self.namespace = namespace
        self.writes_never_wait = bool(getattr(store, "writes_never_wait", False))

    def bind(self, driver: Driver) -> None:
        """A networked store makes its sockets and locks with *driver*."""
        bind = getattr(self.store, "bind", None)
        if bind is not None:
            bind(driver)

    def load(self, sid_ctx: bytes, session_id: bytes) -> bytes | None:
        key = store_key(self.namespace, sid_ctx, session_id)
        blob = self.store.get(key)
        return None if blob is None else self.sealer.open(blob, key.encode())

    def save(self, sid_ctx: bytes, session_id: bytes, der: bytes, ttl: int) -> None:
        key = store_key(self.namespace, sid_ctx, session_id)
        self.store.set(key, self.sealer.seal(der, key.encode()), ttl)

    def forget(self, sid_ctx: bytes, session_id: bytes) -> None:
        self.store.delete(store_key(self.namespace, sid_ctx, session_id))


class CallbackBackend:
    """User functions: ``get(session_id) -> bytes | None``, ``new(session_id, der)``, ``remove(session_id)``.

    Each may block on its driver or return a pending result (``async def`` under asyncio, a
    ``Future``, an ``AsyncResult``), which the cache waits for.  They see raw DER (which holds the
    master secret): sealing is theirs to do.
    """

    writes_never_wait = False  # the user's functions may do I/O: writes are deferred

    def __init__(
        self,
        get: Callable[[bytes], bytes | None] | None,
        new: Callable[[bytes, bytes], Any] | None,
        remove: Callable[[bytes], Any] | None,
    ) -> None:
        self._get, self._new, self._remove = get, new, remove

    def bind(self, driver: Driver) -> None:
        pass  # the user's functions wait however they wait

    def load(self, sid_ctx: bytes, session_id: bytes) -> Any:
        return None if self._get is None else self._get(session_id)

    def save(self, sid_ctx: bytes, session_id: bytes, der: bytes, ttl: int) -> Any:
        return None if self._new is None else self._new(session_id, der)

    def forget(self, sid_ctx: bytes, session_id: bytes) -> Any:
        return None if self._remove is None else self._remove(session_id)


class SessionCache:
    """The glue between OpenSSL's session callbacks and a `SessionBackend`."""

    def __init__(self, backend: SessionBackend, *, timeout: float = 0.5, max_pending_writes: int = 1024) -> None:
        self.backend = backend
        self.timeout = timeout
        self.max_pending_writes = max_pending_writes
        self.stats = SessionCacheStats()
        self._pending_writes = 0
        self.driver: Driver | None = None  # what lookups wait through and deferred writes run on

    def bind(self, driver: Driver) -> None:
        """Serve connections of *driver* (a server binds its context's cache when it starts).

        Once: a cache bound to one driver refuses another (`ValueError`), because its store's
        sockets and locks wait through one loop.  A cache no server bound is bound by the first
        connection that uses it.
        """
        if check_rebind(self.driver, driver, self):
            self.backend.bind(driver)
            self.driver = driver

    def lookup(self, driver: Driver, sid_ctx: bytes, session_id: bytes) -> bytes | None:
        """The DER of a stored session, or None.  Runs inside the handshake (of a connection of
        *driver*) and may pause; never raises an ``Exception`` (a failure, a connection of another
        driver, is a miss), but lets cancellation (``BaseException``) through."""
        self.stats.lookups += 1
        started = time.monotonic()
        try:
            self.bind(driver)
            der = driver.call_with_timeout(self._settled, self.timeout, driver, self.backend.load, sid_ctx, session_id)
        except SealError as exc:
            self.stats.rejected += 1
            log.debug("session %s rejected: %s", session_id.hex()[:16], exc)
            der = None
        except TimeoutError:
            self.stats.timeouts += 1
            log.debug("session store lookup timed out after %.3f s", self.timeout)
            der = None
        except Exception as exc:  # noqa: BLE001 - a store failure is a miss, never a client error
            self.stats.store_errors += 1
            log.debug("session store lookup failed: %s: %s", type(exc).__name__, exc)
            der = None
        finally:
            elapsed = time.monotonic() - started
            self.stats.store_seconds += elapsed
            self.stats.slowest_lookup = max(self.stats.slowest_lookup, elapsed)
        if der is None or isinstance(der, bytes):
            return der
        self.stats.rejected += 1
        log.debug("session store returned %s, not bytes", type(der).__name__)
        return None

    def _settled(self, driver: Driver, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or what it comes to if that is a pending result its driver recognises."""
        value = fn(*args)
        waitable = driver.pending(value)
        if waitable is None:
            return value
        # a lookup pauses its handshake's job; a deferred write is outside any job and simply waits
        return pause(waitable, self.timeout) if current_job() is not None else driver.wait(waitable, self.timeout)

    def record_hit(self, hit: bool) -> None:
        if hit:
            self.stats.hits += 1
        else:
            self.stats.misses += 1

    def record_rejected(self, why: str) -> None:
        self.stats.rejected += 1
        log.debug("stored session rejected: %s", why)

    def save_later(self, driver: Driver, sid_ctx: bytes, session_id: bytes, der: bytes, ttl: int) -> None:
        """Save a new session: deferred, or at once where the backend never waits (nothing can pause)."""
        if self.driver is None:
            self.bind(driver)
        if self.backend.writes_never_wait:
            self._write(driver, "stored", self.backend.save, sid_ctx, session_id, der, max(1, ttl))
            return
        self._write_later("stored", self.backend.save, sid_ctx, session_id, der, max(1, ttl))

    def forget_later(self, sid_ctx: bytes, session_id: bytes) -> None:
        self._write_later("deleted", self.backend.forget, sid_ctx, session_id)

    def _write_later(self, counter: str, fn: Callable[..., Any], *args: Any) -> None:
        driver = self.driver
        if driver is None:
            log.debug("session store write before the cache served any connection: nothing to run it on")
            return
        if self._pending_writes >= self.max_pending_writes:
            self.stats.dropped_writes += 1
            return
        self._pending_writes += 1
        driver.defer(self._deferred_write, driver, counter, fn, *args)

    def _deferred_write(self, driver: Driver, counter: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._write(driver, counter, fn, *args)
        finally:
            self._pending_writes -= 1

    def _write(self, driver: Driver, counter: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            driver.call_with_timeout(self._settled, self.timeout, driver, fn, *args)
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        except Exception as exc:  # noqa: BLE001 - logged and counted; a lost write costs a full handshake
            self.stats.store_failures += 1
            log.warning("session store write failed: %s: %s", type(exc).__name__, exc)
