"""A store on memcached through pymemcache's connection pool."""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

try:
    from pymemcache.client.base import PooledClient
except ImportError as exc:  # the client library is an extra
    raise ImportError(
        "the memcached session store needs pymemcache: pip install 'pausetls[memcached]' "
        "(or 'pausetls[stores]' for both stores)"
    ) from exc

from ._common import check_entry, check_key, format_address, memcached_expiry
from ._pooled import PooledStore

if TYPE_CHECKING:
    from ...core._driver import Driver

__all__ = ["MemcachedStore"]

T = TypeVar("T")


def _is_stale(sock: Any) -> bool:
    """True when an idle pooled connection has something to read: EOF or reset (the
    server went away, perhaps since restarted) or bytes nobody asked for.  One
    non-blocking poll, as redis-py does before reusing a connection; it lets
    the first operation after a restart succeed instead of failing once per
    pooled connection.
    """
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class MemcachedStore(PooledStore):
    """A `SessionStore` on one memcached server.

    Its sockets and pool slots come from its *driver* (`gevent.socket` under
    gevent, so a greenlet waiting on memcached lets the others run; stdlib
    sockets under threads): given here, or by the server whose session cache
    it is installed in (`bind`).  *timeout* bounds
    connecting and each socket read or write.  At most *max_pool_size*
    operations run at once; more wait up to *timeout* for a free connection.
    """

    store_name = "memcached"

    def __init__(
        self,
        host: str,
        port: int = 11211,
        *,
        timeout: float = 0.5,
        driver: Driver | None = None,
        max_pool_size: int = 64,
    ) -> None:
        self.host = host
        self.port = port
        self.max_pool_size = max_pool_size  # checked by PooledStore
        super().__init__(format_address(host, port), timeout, max_pool_size, driver)

    def _open_pool(self, driver: Driver) -> Any:
        return PooledClient(
            (self.host, self.port),
            connect_timeout=self.timeout,
            timeout=self.timeout,
            no_delay=True,
            socket_module=driver.socket_module,
            max_pool_size=self.max_pool_size,
            # Wait for STORED/DELETED so a failed write raises instead of passing silently.
            default_noreply=False,
        )

    def _close_pool(self) -> None:
        self._pool.close()

    def get(self, key: str) -> bytes | None:
        check_key(key)
        value: bytes | None = self._call("get", lambda client: client.get(key))  # raw bytes: no serde
        return value

    def set(self, key: str, value: bytes, ttl: int) -> None:
        expire = memcached_expiry(check_entry(key, value, ttl))

        def store(client: Any) -> None:
            if client.set(key, value, expire=expire, noreply=False) is not True:
                raise ValueError("the server did not answer STORED")

        self._call("set", store)

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        """Set *key* only if it is absent (memcached ``add``): True if this call stored it."""
        expire = memcached_expiry(check_entry(key, value, ttl))
        return bool(self._call("add", lambda client: client.add(key, value, expire=expire, noreply=False)))

    def delete(self, key: str) -> None:
        check_key(key)

        def remove(client: Any) -> None:
            # raw_command, because Client.delete reads any reply but DELETED as "not found".
            reply = client.raw_command(f"delete {key}", b"\r\n")
            if reply not in (b"DELETED", b"NOT_FOUND"):
                raise ValueError(f"unexpected reply {reply[:60]!r}")

        self._call("delete", remove)

    def _call(self, operation: str, fn: Callable[[Any], T]) -> T:
        with self._operation(operation), self._client() as client:
            return fn(client)

    @contextmanager
    def _client(self) -> Iterator[Any]:
        """A pooled pymemcache `Client`, destroyed on any exception.

        `PooledClient`'s own methods only destroy a client on `Exception`: a
        `gevent.Timeout` or `GreenletExit` in mid-request would leave it
        checked out forever, half-read, and shrink the pool for good.
        """
        pool = self._pool.client_pool
        client = pool.get()
        try:
            if client.sock is not None and _is_stale(client.sock):
                client.close()  # pymemcache reconnects on the next command
            yield client
        except BaseException:
            pool.destroy(client)
            raise
        pool.release(client)
