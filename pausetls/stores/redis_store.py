"""Public path of `pausetls.sessions.stores.redis_store`."""

from __future__ import annotations

from ..sessions.stores.redis_store import DriverConnection, RedisStore

__all__ = ["RedisStore", "DriverConnection"]
