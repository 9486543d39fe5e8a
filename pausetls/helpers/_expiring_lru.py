"""`ExpiringLRU`: a bounded cache whose entries also expire, for the helpers' fetched or loaded results."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ExpiringLRU"]

V = TypeVar("V")


class ExpiringLRU(Generic[V]):
    """At most *size* entries (0: none kept), least recently used out first; each with an optional expiry.

    An expired entry is dropped when it is met; nothing sweeps in the background.
    """

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float | None, V]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, V | None]:
        """(True, value) for a live entry, else (False, None): a cached value may itself be None."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if entry[0] is not None and entry[0] <= self._clock():
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, entry[1]

    def put(self, key: str, value: V, ttl: float | None) -> None:
        """Keep *value* for *ttl* seconds (None: until evicted)."""
        if self._size <= 0:
            return
        self._entries[key] = (None if ttl is None else self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def pop(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
