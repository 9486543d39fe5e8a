"""Public path of the session stores; the implementation is `pausetls.sessions.stores`.

`MemcachedStore` and `RedisStore` stay lazy here too: their client libraries are optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..sessions import stores as _stores
from ..sessions.stores import MAX_KEY_LENGTH, MemoryStore, SessionStore, store_from_url

if TYPE_CHECKING:
    from ..sessions.stores import MemcachedStore, RedisStore

__all__ = ["SessionStore", "MemoryStore", "MemcachedStore", "RedisStore", "store_from_url", "MAX_KEY_LENGTH"]


def __getattr__(name: str) -> Any:
    return getattr(_stores, name)
