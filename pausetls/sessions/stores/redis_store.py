"""A store on Redis through redis-py's connection pool."""

from __future__ import annotations

import inspect
import socket
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

try:
    import redis
    import redis.connection
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # the client library is an extra
    raise ImportError(
        "the redis session store needs redis-py: pip install 'pausetls[redis]' (or 'pausetls[stores]' for both stores)"
    ) from exc

from ._common import RedisCommands, format_address
from ._pooled import PooledStore

if TYPE_CHECKING:
    from ...core._driver import Driver

__all__ = ["RedisStore", "DriverConnection"]

T = TypeVar("T")


class DriverConnection(redis.connection.Connection):
    """redis-py's TCP connection with its socket made by a driver's socket module.

    redis-py creates sockets with the stdlib module, which blocks the whole
    hub in a gevent process that is not monkey-patched.  Everything else
    (parsing, reading with ``recv_into``, timeouts) works unchanged on a
    gevent socket.  `connection_class` makes the subclass for one module.
    """

    socket_module: ModuleType = socket

    def _connect(self) -> socket.socket:
        # create_connection resolves (through gevent's resolver under gevent) and tries every address,
        # as the parent does.
        sock: socket.socket = self.socket_module.create_connection(
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


@cache
def connection_class(socket_module: ModuleType) -> type[DriverConnection]:
    """The `DriverConnection` making its sockets with *socket_module* (one class per module)."""
    return type(f"DriverConnection[{socket_module.__name__}]", (DriverConnection,), {"socket_module": socket_module})


def _no_client_info() -> dict[str, Any]:
    """Connection arguments that skip CLIENT SETINFO: two round trips per new connection for nothing."""
    parameters = inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    return {"driver_info": None} if "driver_info" in parameters else {"lib_name": None, "lib_version": None}


class RedisStore(PooledStore, RedisCommands):
    """A `SessionStore` on one Redis server (SET with EX, GET, DEL).

    Its sockets and pool slots come from its *driver* (`gevent.socket` under
    gevent, stdlib sockets under threads): given here, or by the server whose
    session cache it is installed in (`bind`).  *timeout* bounds connecting and each socket read or write.  At most
    *max_connections* operations run at once; more wait up to *timeout* for a
    free connection.
    """

    def __init__(
        self,
        host: str,
        port: int = 6379,
        db: int = 0,
        *,
        password: str | None = None,
        timeout: float = 0.5,
        driver: Driver | None = None,
        max_connections: int = 64,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.max_connections = max_connections  # checked by PooledStore
        self._password = password
        self._client: Any = None
        super().__init__(f"{format_address(host, port)}/{db}", timeout, max_connections, driver)

    def _open_pool(self, driver: Driver) -> Any:
        pool = redis.ConnectionPool(
            connection_class=connection_class(driver.socket_module),
            max_connections=self.max_connections,
            host=self.host,
            port=self.port,
            db=self.db,
            password=self._password,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # RESP2: no HELLO round trip per new connection, any server version, and
            # none of RESP3's maintenance-notification handling (on by default under
            # RESP3, it replaces the pool's plain check of idle connections for EOF).
            protocol=2,
            # Fail at once: retrying is the session cache's call (a miss is always safe).
            retry=Retry(NoBackoff(), 0),
            **_no_client_info(),
        )
        self._client = redis.Redis(connection_pool=pool)
        return pool

    def _close_pool(self) -> None:
        self._pool.disconnect()

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        with self._operation(operation):
            return fn()
