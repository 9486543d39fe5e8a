"""The embedded default: an in-process LRU with a size bound and per-entry TTL."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ._common import check_key, check_ttl, check_value, closed_error

__all__ = ["MemoryStore"]


class MemoryStore:
    """A `SessionStore` in this process's memory, shared by every greenlet and thread.

    Every operation is O(1): an `OrderedDict` kept in least-recently-used
    order.  An expired entry is dropped when it is next looked up; one never
    looked up again is evicted like any other once it becomes the least
    recently used, so no sweeper is needed.  The lock is held only around the
    dict operations, which never block, so greenlets do not need a gevent lock.

    *clock* (default `time.monotonic`) is only there so tests can move time.
    """

    def __init__(self, max_entries: int = 100_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be an int >= 1, not {max_entries!r}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # key -> (expires at, value)
        self._lock = threading.Lock()
        self._closed = False

    def get(self, key: str) -> bytes | None:
        check_key(key)
        now = self._clock()
        with self._lock:
            self._check_open()
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        check_key(key)
        check_value(value)
        expires = self._clock() + check_ttl(ttl)
        with self._lock:
            self._check_open()
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._check_open()
            self._entries.pop(key, None)

    def close(self) -> None:
        """Drop every entry; later operations raise `SessionStoreError`."""
        with self._lock:
            self._closed = True
            self._entries.clear()

    def __len__(self) -> int:
        """Entries held, including expired ones not yet dropped or evicted."""
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self)}/{self.max_entries} entries>"

    def _check_open(self) -> None:
        if self._closed:
            raise closed_error("memory store", "in-process")
