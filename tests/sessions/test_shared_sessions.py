"""Sessions shared through real memcached and Redis servers: across processes, workers and outages."""

from __future__ import annotations

import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import gevent
import pytest

import pausetls
from pausetls.stores import MemcachedStore

from conftest import make_server_context, stdlib_client_context, wait_until
from gates import GENEROUS
from pki import PKI, Issued
from served import fetch_page, resumed_within, serve, session_key_file
from servers import MemcachedServer


@pytest.fixture(params=["memcached", "redis"])
def store_server(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return session_key_file(tmp_path)


def test_a_session_made_by_one_server_process_resumes_on_another(
    tmp_path: Path, pki: PKI, server_cert: Issued, store_server: Any, key_file: Path, tls_version: int
) -> None:
    a = serve(tmp_path, "a", server_cert, store_server.url, key_file)
    b = serve(tmp_path, "b", server_cert, store_server.url, key_file)
    try:
        ctx = stdlib_client_context(pki, version=tls_version)
        first, session = fetch_page(a.port, ctx)
        assert first["Session resumed"] == "no"
        second = resumed_within(b.port, ctx, session)
        assert second["Session resumed"] == "yes"
        assert second["Server process"] != first["Server process"]
        assert b.stop() == 0
        assert b.counters()["sessions"]["hits"] >= 1
    finally:
        a.kill()
        b.kill()


def test_pre_forked_workers_resume_each_others_sessions(
    tmp_path: Path, pki: PKI, server_cert: Issued, memcached_server: MemcachedServer, key_file: Path
) -> None:
    served = serve(tmp_path, "workers", server_cert, memcached_server.url, key_file, "--workers", "2")
    try:
        ctx = stdlib_client_context(pki)
        first, session = fetch_page(served.port, ctx)
        pids = {first["Server process"]}
        deadline = time.monotonic() + GENEROUS  # which worker accepts is the kernel's choice: try until one other does
        while True:
            page, _ = fetch_page(served.port, ctx, session)
            pids.add(page["Server process"])
            if page["Session resumed"] == "yes" and page["Server process"] != first["Server process"]:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"no resumption on another worker (pids seen: {pids})")
            time.sleep(0.02)
        assert served.stop() == 0
    finally:
        served.kill()


def test_killing_memcached_mid_run_degrades_to_full_handshakes_and_recovers(
    pki: PKI, server_cert: Issued, memcached_server: MemcachedServer, start_server: Any, tls_version: int
) -> None:
    ctx = make_server_context(server_cert, tls_version)
    cache = ctx.set_session_cache(MemcachedStore(*memcached_server.address, timeout=2), timeout=2)
    server = start_server(ctx)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)

    def handshake(session: ssl.SSLSession | None = None) -> tuple[ssl.SSLSession, bool]:
        with gevent.socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as raw:
            with client.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"x")
                assert tls.recv(10) == b"x"
                return tls.session, tls.session_reused

    def resumes(session: ssl.SSLSession) -> bool:
        """Resumes within a generous deadline (the session is written to memcached after the handshake)."""
        return wait_until(lambda: handshake(session)[1])

    session, _ = handshake()
    assert resumes(session)
    hits = cache.stats.hits

    memcached_server.stop()
    outcomes = [handshake(session)[1] for _ in range(5)]  # every client is served, with full handshakes
    assert outcomes == [False] * 5
    assert cache.stats.store_errors + cache.stats.timeouts >= 5
    assert cache.stats.hits == hits

    memcached_server.start()
    session, _ = handshake()  # the restarted memcached is empty: make a new session
    assert resumes(session)
    assert cache.stats.hits > hits
    assert server.stats.handshakes_failed == 0


def test_the_shared_store_holds_no_master_secret(
    pki: PKI, server_cert: Issued, memcached_server: MemcachedServer, start_server: Any, tls_version: int
) -> None:
    secrets: list[bytes] = []

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        tls.sendall(tls.recv(10))
        secrets.append(tls.master_key() or b"")

    store = MemcachedStore(*memcached_server.address)
    ctx = make_server_context(server_cert, tls_version)
    cache = ctx.set_session_cache(store)
    server = start_server(ctx, handler)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    with gevent.socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as raw:
        with client.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"x")
            tls.recv(10)
    assert wait_until(lambda: cache.stats.stored >= 1)
    assert cache.stats.stored >= 1 and secrets and len(secrets[0]) >= 32
    raw_dump = _memcached_dump(memcached_server.address)
    assert raw_dump, "nothing was stored"
    assert secrets[0] not in raw_dump


def _memcached_dump(address: tuple[str, int]) -> bytes:
    """Every value memcached holds, read with its own text protocol (lru_crawler metadump + get)."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"lru_crawler metadump all\r\n")
        listing = _read_until(sock, b"END\r\n")
        keys = re.findall(rb"key=(\S+)", listing)
        values = b""
        for key in keys:
            sock.sendall(b"get " + key.replace(b"%3A", b":") + b"\r\n")
            values += _read_until(sock, b"END\r\n")
        return values


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while not data.endswith(marker):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
