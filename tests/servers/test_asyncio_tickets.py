"""Stateless tickets on `pausetls.asyncio` servers: a `StoredTicketKeys` ring over the asyncio stores
(``redis.asyncio``, ``aiomcache``) awaits its key fetches on the loop; 200 of them are paused at once."""

from __future__ import annotations

import asyncio
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asyncio_support import Run, echo, port_of, run_fixture  # noqa: F401 - run_fixture is the `run` fixture

import pausetls
import pausetls.asyncio as pasyncio
from pausetls.sealing import SessionSealer
from pausetls.sessions.tickets import TicketKeyStats
from pausetls.stores.asyncio_stores import AsyncioMemcachedStore, AsyncioRedisStore

from conftest import make_server_context, stdlib_client_context
from gates import GENEROUS, AsyncGate
from pki import PKI, Issued

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)

CLIENTS = 200


class GatedStore:
    """An asyncio store whose gets first wait at an `AsyncGate` until it opens (awaited on the loop)."""

    def __init__(self, inner: Any, gate: AsyncGate) -> None:
        self.inner, self.gate = inner, gate

    def get(self, key: str) -> bytes | None:
        if not self.gate.opened:
            pasyncio.await_only(self.gate.arrive())
        return self.inner.get(key)  # type: ignore[no-any-return]

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        return self.inner.add(key, value, ttl)  # type: ignore[no-any-return]


def resume(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
    """A blocking stdlib client (run in a thread): one connection offering *session*."""
    with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"x")
            assert tls.recv(10) == b"x"  # TLS 1.3: the ticket comes with it
            return tls.session, bool(tls.session_reused)


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_200_resumptions_on_another_node_await_the_key_fetch_together(
    run: Run, pki: PKI, server_cert: Issued, tls_version: int, kind: str, request: pytest.FixtureRequest
) -> None:
    address = request.getfixturevalue(f"{kind}_server").address
    master = SessionSealer.generate()
    client = stdlib_client_context(pki, version=tls_version)

    def store() -> Any:
        return (
            AsyncioRedisStore(*address, timeout=GENEROUS, max_connections=CLIENTS)
            if kind == "redis"
            else AsyncioMemcachedStore(*address)
        )

    async def main() -> tuple[list[bool], AsyncGate, TicketKeyStats]:
        gate = AsyncGate(CLIENTS)
        stores = [store(), store()]
        nodes = []
        for ring_store in (stores[0], GatedStore(stores[1], gate)):
            ctx = make_server_context(server_cert, tls_version)
            ring = pausetls.StoredTicketKeys(ring_store, master, timeout=2 * GENEROUS)  # the last is node 1's
            ctx.set_ticket_keys(ring)
            nodes.append(await pasyncio.start_server(echo, "127.0.0.1", 0, context=ctx, backlog=1024))
        loop = asyncio.get_running_loop()
        session, _ = await loop.run_in_executor(None, resume, port_of(nodes[0]), client, None)
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = await asyncio.gather(
                *[loop.run_in_executor(pool, resume, port_of(nodes[1]), client, session) for _ in range(CLIENTS)]
            )
        for server in nodes:
            server.close()
            await server.wait_closed()
        for each in stores:
            await each.aclose()
        return [reused for _, reused in results], gate, ring.stats

    reused, gate, stats = run(main())
    assert gate.opened, gate.why()
    assert reused == [True] * CLIENTS
    assert stats.resumed == CLIENTS and stats.store_errors == 0
