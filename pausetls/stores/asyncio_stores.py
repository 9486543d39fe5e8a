"""Public path of `pausetls.sessions.stores.asyncio_stores`."""

from __future__ import annotations

from ..sessions.stores.asyncio_stores import AsyncioMemcachedStore, AsyncioRedisStore, MemoryStore

__all__ = ["AsyncioMemcachedStore", "AsyncioRedisStore", "MemoryStore"]
