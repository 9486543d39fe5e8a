"""A store on Redis through redis-py's connection pool."""

from __future__ import annotations

import inspect
import socket
from collections.abc import Callable
from typing import Any, TypeVar

try:
    import redis
    import redis.connection
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("RedisStore needs redis-py (pip install redis)") from exc

from ._common import Slots, check_key, check_ttl, check_value, closed_error, format_address, store_error

__all__ = ["RedisStore", "GeventConnection"]

T = TypeVar("T")


class GeventConnection(redis.connection.Connection):
    """redis-py's TCP connection with its socket made by `gevent.socket`.

    redis-py creates sockets with the stdlib module, which blocks the whole
    hub in a process that is not monkey-patched.  Everything else (parsing,
    reading with ``recv_into``, timeouts) works unchanged on a gevent socket.
    """

    def _connect(self) -> socket.socket:
        import gevent.socket  # lazily: the module must import without gevent

        # create_connection resolves through gevent's resolver and tries every address, as the parent does.
        sock: socket.socket = gevent.socket.create_connection(
            (self.host, self.port), timeout=self.socket_connect_timeout
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.socket_keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                for option, value in self.socket_keepalive_options.items():
                    sock.setsockopt(socket.IPPROTO_TCP, option, value)
            sock.settimeout(self.socket_timeout)
        except BaseException:
            sock.close()
            raise
        return sock


def _no_client_info() -> dict[str, Any]:
    """Connection arguments that skip CLIENT SETINFO: two round trips per new connection for nothing."""
    parameters = inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    return {"driver_info": None} if "driver_info" in parameters else {"lib_name": None, "lib_version": None}


class RedisStore:
    """A `SessionStore` on one Redis server (SET with EX, GET, DEL).

    With *cooperative* (the default) connections use `GeventConnection`;
    without it redis-py's own (for threads, or a monkey-patched process); a
    cooperative store belongs to the hub (thread) that first uses it.
    *timeout* bounds connecting and each socket read or write.  At most
    *max_connections* operations run at once; more wait up to *timeout* for a
    free connection.
    """

    store_name = "redis"

    def __init__(
        self,
        host: str,
        port: int = 6379,
        db: int = 0,
        *,
        password: str | None = None,
        timeout: float = 0.5,
        cooperative: bool = True,
        max_connections: int = 64,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.timeout = timeout
        self.cooperative = cooperative
        self.address = f"{format_address(host, port)}/{db}"
        self._closed = False
        self._slots = Slots(max_connections, timeout, cooperative)  # also fails now if gevent is missing
        self._pool = redis.ConnectionPool(
            connection_class=GeventConnection if cooperative else redis.connection.Connection,
            max_connections=max_connections,
            host=host,
            port=port,
            db=db,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # RESP2: no HELLO round trip per new connection, any server version, and
            # none of RESP3's maintenance-notification handling (on by default under
            # RESP3, it replaces the pool's plain check of idle connections for EOF).
            protocol=2,
            # Fail at once: retrying is the session cache's call (a miss is always safe).
            retry=Retry(NoBackoff(), 0),
            **_no_client_info(),
        )
        self._client = redis.Redis(connection_pool=self._pool)

    def get(self, key: str) -> bytes | None:
        check_key(key)
        value: object = self._call("get", lambda: self._client.get(key))
        if value is None or isinstance(value, bytes):
            return value
        raise store_error(self.store_name, self.address, "get", TypeError(f"unexpected reply {value!r:.60}"))

    def set(self, key: str, value: bytes, ttl: int) -> None:
        check_key(key)
        check_value(value)
        check_ttl(ttl)
        reply = self._call("set", lambda: self._client.set(key, value, ex=ttl))
        if reply is not True:
            raise store_error(self.store_name, self.address, "set", ValueError(f"unexpected reply {reply!r:.60}"))

    def delete(self, key: str) -> None:
        check_key(key)
        self._call("delete", lambda: self._client.delete(key))

    def close(self) -> None:
        """Disconnect every pooled connection; later operations raise `SessionStoreError`."""
        self._closed = True
        self._pool.disconnect()

    def __repr__(self) -> str:
        return f"<RedisStore {self.address}>"

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        if self._closed:
            raise closed_error(self.store_name, self.address)
        try:
            with self._slots():
                return fn()
        except Exception as exc:  # every library, socket or protocol failure becomes one error type
            raise store_error(self.store_name, self.address, operation, exc) from exc
