"""`PooledStore`: what the driver-bound, connection-pooled stores (memcached, Redis) share.

Each store makes its own client pool; this base holds the state around it --
the driver bound once, the pool's slots, closing -- and the one path every
operation takes, so both stores fail the same way for the same cause.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._common import Slots, check_pool_size, check_rebind, closed_error, store_error, unbound_error

if TYPE_CHECKING:
    from ...core._driver import Driver


class PooledStore:
    """A store on one server whose sockets and pool slots come from a driver (given, or by `bind`)."""

    store_name: str

    def __init__(self, address: str, timeout: float, pool_size: int, driver: Driver | None) -> None:
        self.address = address
        self.timeout = timeout
        self.driver: Driver | None = None
        self._pool_size = check_pool_size(pool_size)
        self._closed = False
        self._slots: Slots | None = None
        self._pool: Any = None
        if driver is not None:
            self.bind(driver)

    def bind(self, driver: Driver) -> None:
        """Make sockets and slots with *driver* (once: `ValueError` for another driver later)."""
        if not check_rebind(self.driver, driver, self):
            return
        self.driver = driver
        self._slots = Slots(self._pool_size, self.timeout, driver)
        self._pool = self._open_pool(driver)

    def _open_pool(self, driver: Driver) -> Any:
        """The client library's pool, its sockets made by *driver*."""
        raise NotImplementedError

    def _close_pool(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close every pooled connection; later operations raise `SessionStoreError`."""
        self._closed = True
        if self._pool is not None:
            self._close_pool()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}>"

    @contextmanager
    def _operation(self, operation: str) -> Iterator[None]:
        """One pool slot for the block; any failure in it becomes the store's `SessionStoreError`."""
        if self._closed:
            raise closed_error(self.store_name, self.address)
        if self._slots is None:
            raise unbound_error(self.store_name, self.address)
        try:
            with self._slots():
                yield
        except Exception as exc:  # every library, socket or protocol failure becomes one error type
            raise store_error(self.store_name, self.address, operation, exc) from exc
