"""Public path of `ThreadedTLSServer` (runs without gevent); the implementation is
`pausetls.servers.threaded`."""

from __future__ import annotations

from .servers.threaded import ThreadedTLSServer

__all__ = ["ThreadedTLSServer"]
