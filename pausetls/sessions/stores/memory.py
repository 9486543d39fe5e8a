"""The embedded default: an in-process LRU bounded in entries and in bytes, with per-entry TTL."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ._common import check_entry, check_key, closed_error

__all__ = ["MemoryStore", "DEFAULT_MAX_ENTRIES", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""A sealed session is a few hundred bytes, a few KiB with a client certificate in it: the
entry bound is reached first unless sessions carry large certificates."""


class MemoryStore:
    """A `SessionStore` in this process's memory, shared by every greenlet and thread.

    Every operation is O(1): an `OrderedDict` kept in least-recently-used
    order.  An expired entry is dropped when it is next looked up; one never
    looked up again is evicted like any other once it becomes the least
    recently used, so no sweeper is needed.  The lock is held only around the
    dict operations, which never block, so greenlets do not need a gevent lock.

    Two bounds, whichever is reached first evicts the least recently used
    entries: *max_entries*, and *max_bytes* of keys plus values (`bytes_used`;
    Python's own per-object overhead is not counted).  A value whose entry
    alone is larger than *max_bytes* is not stored (an older value under its
    key is dropped, as an overwrite would) and is counted in `oversized`.

    *clock* (default `time.monotonic`) is only there so tests can move time.
    """

    writes_never_wait = True
    """Nothing here blocks: the session cache writes new sessions inline (see `SessionStore`)."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = _positive_int(max_entries, "max_entries")
        self.max_bytes = _positive_int(max_bytes, "max_bytes")
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # key -> (expires at, value)
        self._bytes = 0
        self.evicted = 0
        """Entries dropped to stay within the bounds."""
        self.oversized = 0
        """Values refused because their entry alone exceeds *max_bytes*."""
        self._lock = threading.RLock()  # reentrant for add (get then set)
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
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        expires = self._clock() + check_entry(key, value, ttl)
        size = _entry_size(key, value)
        with self._lock:
            self._check_open()
            self._drop(key)
            if size > self.max_bytes:
                self.oversized += 1
                return
            self._entries[key] = (expires, value)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                oldest, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= _entry_size(oldest, evicted)
                self.evicted += 1

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        """Set *key* only if it is absent or expired: True if this call stored it."""
        with self._lock:  # reentrant: get and set take it too, and nothing slips in between
            if self.get(key) is not None:
                return False
            self.set(key, value, ttl)
            return True

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._check_open()
            self._drop(key)

    def close(self) -> None:
        """Drop every entry; later operations raise `SessionStoreError`."""
        with self._lock:
            self._closed = True
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        """Entries held, including expired ones not yet dropped or evicted."""
        with self._lock:
            return len(self._entries)

    @property
    def bytes_used(self) -> int:
        """Bytes of keys and values held (what *max_bytes* bounds)."""
        with self._lock:
            return self._bytes

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self)}/{self.max_entries} entries, {self.bytes_used}/{self.max_bytes} bytes>"

    def _drop(self, key: str) -> None:
        """Remove *key* if present (lock held)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= _entry_size(key, entry[1])

    def _check_open(self) -> None:
        if self._closed:
            raise closed_error("memory store", "in-process")


def _entry_size(key: str, value: bytes) -> int:
    return len(key) + len(value)  # keys are ASCII (check_key): one byte per character


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, not {value!r}")
    return value
