"""Public path of session sealing; the implementation is `pausetls.sessions.sealing`."""

from __future__ import annotations

from .sessions.sealing import SealError, SessionSealer, store_key

__all__ = ["SealError", "SessionSealer", "store_key"]
