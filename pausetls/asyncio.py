"""Public path of pausetls for asyncio (`start_server`, `open_connection`, `Server`); the
implementation is `pausetls.servers.asyncio`."""

from __future__ import annotations

from .servers.asyncio import AsyncTLSConnection, Server, await_only, greenlet_spawn, open_connection, start_server

__all__ = ["Server", "start_server", "open_connection", "await_only", "greenlet_spawn", "AsyncTLSConnection"]
