"""A session store that goes down mid-run is reported at most once per 10 s, with a count, not once per
connection: real memcached and Redis servers, stopped while a pausetls server of each driver uses them."""

from __future__ import annotations

import logging
import re
import ssl
from typing import Any

import gevent
import pytest

from pausetls.stores import store_from_url
from pausetls.stores.asyncio_stores import AsyncioMemcachedStore, AsyncioRedisStore

from conftest import make_server_context, stdlib_client_context, wait_until
from drivers import DRIVERS, server_class
from pki import PKI, Issued

REPORT = re.compile(r"^session store failing: .* \((?P<count>\d+) failures?")


@pytest.fixture(params=["memcached", "redis"])
def store_server(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_server")


def store_for(driver: str, server: Any) -> Any:
    """The store a server of *driver* uses: asyncio awaits its own clients, the others block through the driver."""
    if driver != "asyncio":
        return store_from_url(server.url, timeout=2)
    if server.scheme == "redis":
        return AsyncioRedisStore(*server.address, timeout=2)
    return AsyncioMemcachedStore(*server.address)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_store_stopped_mid_run_is_reported_once_per_interval_with_a_count(
    driver: str,
    pki: PKI,
    server_cert: Issued,
    store_server: Any,
    start_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = make_server_context(server_cert)
    cache = ctx.set_session_cache(store_for(driver, store_server), timeout=2)
    now = [1000.0]
    cache.failures.clock = lambda: now[0]  # the test decides when 10 s have passed
    server = start_server(ctx, server_class=server_class(driver))
    client = stdlib_client_context(pki, cooperative=True)

    def handshake(session: ssl.SSLSession | None = None) -> ssl.SSLSession:
        with gevent.socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as raw:
            with client.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"x")
                assert tls.recv(10) == b"x"
                return tls.session

    def failures() -> int:
        return cache.stats.store_errors + cache.stats.timeouts + cache.stats.store_failures

    def reported_lines() -> list[str]:
        return [message for r in caplog.records if REPORT.search(message := r.getMessage())]

    def reports() -> list[int]:
        return [int(m["count"]) for line in reported_lines() if (m := REPORT.search(line))]

    session = handshake()
    assert wait_until(lambda: cache.stats.stored >= 1)
    store_server.stop()
    with caplog.at_level(logging.WARNING, logger="pausetls.sessions"):
        for _ in range(5):  # each one: a failed lookup of the offered session, then a failed write of a new one
            handshake(session)
        assert wait_until(lambda: failures() >= 10)
        assert reports() == [1]  # ten failures, one line
        # the line names the store that failed (the asyncio Redis store once said nothing: a copy-paste slip)
        assert f"SessionStoreError: {store_server.scheme} at 127.0.0.1:{store_server.port}" in reported_lines()[0]

        now[0] += 10.0
        handshake(session)
        assert wait_until(lambda: failures() >= 12)
    counts = reports()
    assert len(counts) == 2 and counts[1] >= 10  # the second line counts what the first one's interval swallowed
    assert sum(counts) + cache.failures.unreported == failures()
    assert server.stats.handshakes_completed == 7  # nobody was refused: a failing store is a full handshake
