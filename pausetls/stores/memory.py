"""Public path of `pausetls.sessions.stores.memory`."""

from __future__ import annotations

from ..sessions.stores.memory import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, MemoryStore

__all__ = ["MemoryStore", "DEFAULT_MAX_ENTRIES", "DEFAULT_MAX_BYTES"]
