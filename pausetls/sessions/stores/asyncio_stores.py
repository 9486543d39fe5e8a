"""Session stores for `pausetls.asyncio`: Redis through ``redis.asyncio``, memcached through ``aiomcache``.

The session cache calls a store synchronously from inside the handshake; under
asyncio that code runs in a `greenlet_spawn` bridge, so these stores
`await_only` their asyncio client: the handshake pauses on the event loop
while every other connection goes on.  `MemoryStore` never waits and serves
asyncio as it is.  Failures raise `SessionStoreError`, as every store does
(the cache turns them into misses).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ...drivers.asyncio import await_only
from ._common import (
    RedisCommands,
    check_entry,
    check_key,
    checked_get_reply,
    closed_error,
    format_address,
    memcached_expiry,
    store_error,
)
from .memory import MemoryStore

__all__ = ["AsyncioMemcachedStore", "AsyncioRedisStore", "MemoryStore"]

T = TypeVar("T")


class _AwaitingStore:
    """One client library's coroutines behind the synchronous `SessionStore` face."""

    # No value here: this class comes first in the stores' MRO, and a default
    # would hide the name `RedisCommands` gives (errors said " at host" for redis).
    store_name: str

    def __init__(self, address: str) -> None:
        self.address = address
        self._closed = False

    def _call(self, operation: str, coroutine: Callable[[], Awaitable[T]]) -> T:
        if self._closed:
            raise closed_error(self.store_name, self.address)
        try:
            result: T = await_only(coroutine())
        except Exception as exc:  # every library, socket or protocol failure becomes one error type
            raise store_error(self.store_name, self.address, operation, exc) from exc
        return result

    def _disconnect(self) -> Awaitable[Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Later operations raise `SessionStoreError`; from bridged code the connections close now (else: `aclose`)."""
        if self._closed:
            return
        self._closed = True
        from ...drivers.asyncio import in_bridge

        if in_bridge():
            await_only(self._disconnect())

    async def aclose(self) -> None:
        self._closed = True
        await self._disconnect()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}>"


class AsyncioRedisStore(_AwaitingStore, RedisCommands):
    """A `SessionStore` on Redis (SET with EX, GET, DEL) through ``redis.asyncio``; one per event loop."""

    def __init__(
        self,
        host: str,
        port: int = 6379,
        db: int = 0,
        *,
        password: str | None = None,
        timeout: float = 0.5,
        max_connections: int = 64,
    ) -> None:
        import redis.asyncio  # lazily: optional dependency
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        super().__init__(f"{format_address(host, port)}/{db}")
        self._client = redis.asyncio.Redis(
            host=host,
            port=port,
            db=db,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=max_connections,
            protocol=2,  # no HELLO round trip per connection (as `RedisStore`)
            retry_on_error=[],
            # fail at once, as `RedisStore`: redis-py otherwise retries a refused connection with backoff
            # (seconds), and retrying is the session cache's call (a miss is always safe)
            retry=Retry(NoBackoff(), 0),
        )

    def _disconnect(self) -> Awaitable[Any]:
        closing: Awaitable[Any] = self._client.aclose()
        return closing


class AsyncioMemcachedStore(_AwaitingStore):
    """A `SessionStore` on one memcached server through ``aiomcache``; one per event loop."""

    store_name = "memcached"

    def __init__(self, host: str, port: int = 11211, *, pool_size: int = 16) -> None:
        import aiomcache  # lazily: optional dependency

        super().__init__(format_address(host, port))
        self._client = aiomcache.Client(host, port, pool_size=pool_size)

    def get(self, key: str) -> bytes | None:
        check_key(key)
        value = self._call("get", lambda: self._client.get(key.encode()))
        return checked_get_reply(self.store_name, self.address, value)

    def set(self, key: str, value: bytes, ttl: int) -> None:
        expiry = memcached_expiry(check_entry(key, value, ttl))
        if not self._call("set", lambda: self._client.set(key.encode(), value, exptime=expiry)):
            raise store_error(self.store_name, self.address, "set", ValueError("not stored"))

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        """memcached ``add``: True if this call stored *key* (it was absent)."""
        expiry = memcached_expiry(check_entry(key, value, ttl))
        return bool(self._call("add", lambda: self._client.add(key.encode(), value, exptime=expiry)))

    def delete(self, key: str) -> None:
        check_key(key)
        self._call("delete", lambda: self._client.delete(key.encode()))

    def _disconnect(self) -> Awaitable[Any]:
        return self._client.close()
