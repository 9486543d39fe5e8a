"""Public path of `pausetls.sessions.stores.memcached`."""

from __future__ import annotations

from ..sessions.stores.memcached import MemcachedStore

__all__ = ["MemcachedStore"]
