"""Argument checks and error wrapping shared by every store, so all stores accept exactly the same input."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ...core.errors import SessionStoreError

if TYPE_CHECKING:
    from ...core._driver import Driver, Semaphore

MAX_KEY_LENGTH = 200

# Printable ASCII without space: memcached's text protocol cannot carry
# whitespace or control characters in a key, and a key that works in one store
# must work in all of them.
_KEY_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")


def check_key(key: object) -> str:
    if not isinstance(key, str):
        raise ValueError(f"session store key must be str, not {type(key).__name__}")
    if _KEY_RE.fullmatch(key) is None:
        raise ValueError(
            f"session store key must be 1-{MAX_KEY_LENGTH} printable ASCII characters without spaces: {key[:60]!r}"
        )
    return key


def check_value(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"session store value must be bytes, not {type(value).__name__}")
    return value


def check_ttl(ttl: object) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError(f"session store ttl must be an int (seconds), not {type(ttl).__name__}")
    if ttl < 1:
        raise ValueError(f"session store ttl must be >= 1 second, not {ttl}")
    return ttl


def check_entry(key: object, value: object, ttl: object) -> int:
    """The checks of every ``set``/``add``, in the order all stores run them; the ttl back."""
    check_key(key)
    check_value(value)
    return check_ttl(ttl)


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets as in URLs."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def store_error(store: str, address: str, operation: str, exc: BaseException) -> SessionStoreError:
    """The error a networked store raises (``from exc``): names store, address and the original failure."""
    detail = str(exc) or "no details"
    return SessionStoreError(f"{store} at {address}: {operation} failed: {type(exc).__name__}: {detail}")


def checked_get_reply(store: str, address: str, value: object) -> bytes | None:
    """A client library's answer to GET: bytes or None, else the store's error (never a str or int to the cache)."""
    if value is None or isinstance(value, bytes):
        return value
    raise store_error(store, address, "get", TypeError(f"unexpected reply {value!r:.60}"))


def closed_error(store: str, address: str) -> SessionStoreError:
    return SessionStoreError(f"{store} at {address} is closed")


def unbound_error(store: str, address: str) -> SessionStoreError:
    return SessionStoreError(
        f"{store} at {address} has no driver yet: give it driver=, or install it in a server's session cache"
    )


def check_rebind(bound: Driver | None, driver: Driver, what: object) -> bool:
    """True if *driver* is new to something bound to *bound*; ValueError for a second, other driver:
    its sockets and locks wait through one loop (a gevent store would block a thread's hub, and back)."""
    if bound is None:
        return True
    if bound is not driver:
        raise ValueError(f"{what} waits through the {bound.name} driver: it cannot serve the {driver.name} driver too")
    return False


def check_pool_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"the pool size must be an int >= 1, not {size!r}")
    return size


class Slots:
    """At most *size* operations at once (the connection pool's size); the others wait up to *timeout*.

    The libraries' own pools fail at once when full, and their blocking
    variants wait on stdlib locks, which would block the hub without gevent's
    monkey-patching.  The store's driver makes the semaphore (a gevent one
    for a store whose sockets belong to one hub, a threading one for threads).
    """

    def __init__(self, size: int, timeout: float, driver: Driver) -> None:
        self.size = check_pool_size(size)
        self.timeout = timeout
        self._semaphore: Semaphore = driver.semaphore(size)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=self.timeout):
            raise TimeoutError(f"all {self.size} connections stayed busy for {self.timeout} s")
        try:
            yield
        finally:
            self._semaphore.release()


class RedisCommands:
    """GET, SET with EX and DEL over a redis-py client, blocking or ``redis.asyncio``, with the same
    argument and reply checks: the store gives ``_client`` and ``_call(operation, fn)``, which runs
    *fn* (awaiting what it returns, under asyncio) and turns its failures into `SessionStoreError`."""

    store_name = "redis"
    address: str
    _client: Any
    _call: Callable[[str, Callable[[], Any]], Any]

    def get(self, key: str) -> bytes | None:
        check_key(key)
        return checked_get_reply(self.store_name, self.address, self._call("get", lambda: self._client.get(key)))

    def set(self, key: str, value: bytes, ttl: int) -> None:
        check_entry(key, value, ttl)
        reply = self._call("set", lambda: self._client.set(key, value, ex=ttl))
        if reply is not True:
            raise store_error(self.store_name, self.address, "set", ValueError(f"unexpected reply {reply!r:.60}"))

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        """SET NX with EX: True if this call stored *key* (it was absent)."""
        check_entry(key, value, ttl)
        reply = self._call("add", lambda: self._client.set(key, value, ex=ttl, nx=True))
        if reply not in (True, None):
            raise store_error(self.store_name, self.address, "add", ValueError(f"unexpected reply {reply!r:.60}"))
        return reply is True

    def delete(self, key: str) -> None:
        check_key(key)
        self._call("delete", lambda: self._client.delete(key))


# memcached reads an expiry above 30 days as an absolute Unix time, not a
# number of seconds: longer TTLs must be sent as a timestamp.
_MAX_RELATIVE_EXPIRE = 30 * 24 * 3600


def memcached_expiry(ttl: int) -> int:
    """What to send memcached as the expiry of an entry that lives *ttl* seconds."""
    return ttl if ttl <= _MAX_RELATIVE_EXPIRE else int(time.time()) + ttl
