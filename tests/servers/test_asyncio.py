"""pausetls.asyncio: async def hooks pause real handshakes on the default loop and on uvloop.

Overlap is proven by `AsyncGate` (every callback waits inside until all of them are), never by timing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from asyncio_support import Run, echo, outcome, ping, port_of, run_fixture  # noqa: F401 - run_fixture is the `run` fixture
from OpenSSL import crypto

import pausetls
import pausetls.asyncio as pasyncio
from pausetls.stores import MemoryStore
from pausetls.stores.asyncio_stores import AsyncioMemcachedStore, AsyncioRedisStore

from conftest import make_server_context, stdlib_client_context
from gates import GENEROUS, AsyncGate
from hook_clients import site_contexts, switch_to_site
from pki import PKI, Issued
from reliability import mutual_context

CLIENTS = 200


async def _served(server: pasyncio.Server, clients: list[Any]) -> list[Any]:
    async with server:
        return list(await asyncio.gather(*clients))


def test_200_clients_whose_async_verify_pauses_together_and_a_rogue_is_refused(
    run: Run, pki: PKI, server_cert: Issued, client_cert: Issued, untrusted_client_cert: Issued
) -> None:
    gate = AsyncGate(CLIENTS)

    async def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        if depth == 0 and ok and not gate.opened:
            await gate.arrive()  # all 200 handshakes are paused here at once, or none goes on
        await asyncio.sleep(0.2 if depth == 0 else 0)
        return bool(ok)

    async def main() -> tuple[list[Any], Any, pausetls.ServerStats]:
        server = await pasyncio.start_server(
            echo, "127.0.0.1", 0, context=mutual_context(pki, server_cert, None, verify)
        )
        port = port_of(server)
        good = stdlib_client_context(pki, client_cert)
        answers = await _served(server, [ping(port, good) for _ in range(CLIENTS)])
        server = await pasyncio.start_server(
            echo, "127.0.0.1", 0, context=mutual_context(pki, server_cert, None, verify)
        )
        rogue = await _served(server, [outcome(port_of(server), stdlib_client_context(pki, untrusted_client_cert))])
        return answers, rogue[0], server.stats

    answers, rogue, stats = run(main())
    assert answers == [b"ping"] * CLIENTS
    assert gate.most_inside == CLIENTS
    assert rogue in (b"", "SSLError", "ConnectionResetError"), rogue  # never b"ping"
    assert stats.handshakes_completed == 0 and stats.verification_failures == 1


def test_200_async_sni_callbacks_pause_together_and_choose_the_certificate(
    run: Run, pki: PKI, server_cert: Issued
) -> None:
    names = ["alpha.test", "beta.test"]
    contexts = site_contexts(pki, names)
    gate = AsyncGate(CLIENTS)

    async def servername(conn: pausetls.TLSSocket) -> bool:
        if not gate.opened:
            await gate.arrive()
        return switch_to_site(conn, contexts)  # False: unrecognized_name

    async def subject(port: int, name: str) -> str:
        ctx = stdlib_client_context(pki)
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
        peercert = writer.get_extra_info("peercert")
        writer.close()
        return str(dict(pair[0] for pair in peercert["subject"])["commonName"])

    async def main() -> tuple[list[str], Any]:
        ctx = make_server_context(server_cert)
        ctx.set_tlsext_servername_callback(servername)
        server = await pasyncio.start_server(echo, "127.0.0.1", 0, context=ctx)
        port = port_of(server)
        got = await _served(server, [subject(port, names[i % 2]) for i in range(CLIENTS)])
        server = await pasyncio.start_server(echo, "127.0.0.1", 0, context=ctx)
        unknown = await _served(server, [outcome(port_of(server), stdlib_client_context(pki), "unknown.test")])
        return got, unknown[0]

    got, unknown = run(main())
    assert got == [names[i % 2] for i in range(CLIENTS)]
    assert gate.most_inside == CLIENTS
    assert unknown == "SSLError"  # unrecognized_name


class GatedStore(MemoryStore):
    """A memory store whose get awaits (through the bridge) until every lookup is inside."""

    def __init__(self, gate: AsyncGate | None) -> None:
        super().__init__()
        self.gate = gate

    def get(self, key: str) -> bytes | None:
        if self.gate is not None and not self.gate.opened:
            pasyncio.await_only(self.gate.arrive())
        return super().get(key)


def _resume(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
    """A blocking stdlib client (in a thread): one connection offering *session*; (its session, reused)."""
    with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"x")
            assert tls.recv(10) == b"x"  # TLS 1.3: the session ticket comes with it
            return tls.session, bool(tls.session_reused)


def _resumptions(
    run: Run, context: pausetls.Context, client_ctx: ssl.SSLContext, clients: int
) -> tuple[list[bool], pausetls.ServerStats]:
    async def main() -> tuple[list[bool], pausetls.ServerStats]:
        loop = asyncio.get_running_loop()
        async with await pasyncio.start_server(echo, "127.0.0.1", 0, context=context) as server:
            port = port_of(server)
            session, reused = await loop.run_in_executor(None, _resume, port, client_ctx, None)
            assert not reused
            with ThreadPoolExecutor(clients) as pool:
                results = await asyncio.gather(
                    *[loop.run_in_executor(pool, _resume, port, client_ctx, session) for _ in range(clients)]
                )
            return [reused for _, reused in results], server.stats

    return run(main())  # type: ignore[no-any-return]


def test_200_resumptions_whose_store_get_pauses_together(
    run: Run, pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    gate = AsyncGate(CLIENTS)
    store = GatedStore(None)
    ctx = make_server_context(server_cert, tls_version)
    ctx.set_session_cache(store, timeout=GENEROUS)
    store.gate = gate  # the first, full handshake looks up nothing worth waiting for
    reused, stats = _resumptions(run, ctx, stdlib_client_context(pki, version=tls_version), CLIENTS)
    assert reused == [True] * CLIENTS
    assert gate.most_inside == CLIENTS
    assert stats.resumed == CLIENTS


async def _until(predicate: Any) -> None:
    async with asyncio.timeout(GENEROUS):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_resumption_through_an_asyncio_store(
    run: Run, pki: PKI, server_cert: Issued, tls_version: int, kind: str, request: pytest.FixtureRequest
) -> None:
    ctx = make_server_context(server_cert, tls_version)
    client_ctx = stdlib_client_context(pki, version=tls_version)

    async def main() -> list[bool]:
        if kind == "redis":
            store: Any = AsyncioRedisStore(*request.getfixturevalue("redis_server").address, timeout=5)
        else:
            store = AsyncioMemcachedStore(*request.getfixturevalue("memcached_server").address)
        cache = ctx.set_session_cache(store, timeout=5)
        loop = asyncio.get_running_loop()
        reused, session = [], None
        async with await pasyncio.start_server(echo, "127.0.0.1", 0, context=ctx) as server:
            for i in range(4):
                # TLS 1.3 tickets are single-use: each connection offers the one the last got (once stored)
                stored = i if tls_version == pausetls.TLS1_3_VERSION else min(i, 1)
                await _until(lambda stored=stored: cache.stats.stored >= stored)
                session, was_reused = await loop.run_in_executor(None, _resume, port_of(server), client_ctx, session)
                reused.append(was_reused)
        assert cache.stats.hits == 3 and cache.stats.store_errors == 0, cache.stats
        await store.aclose()
        return reused

    assert run(main()) == [False, True, True, True]


def test_get_extra_info_answers_like_asyncio_ssl(run: Run, pki: PKI, server_cert: Issued, client_cert: Issued) -> None:
    seen: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")
        seen.update(
            version=tls.version(),
            cipher=writer.get_extra_info("cipher"),
            peercert=writer.get_extra_info("peercert"),
            peername=writer.get_extra_info("peername"),
            reused=tls.session_reused,
            getpeercert=tls.getpeercert(),
        )
        await echo(reader, writer)

    async def main() -> tuple[bytes, Any]:
        ctx = mutual_context(pki, server_cert, None, None)
        async with await pasyncio.start_server(handler, "127.0.0.1", 0, context=ctx) as server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port_of(server), ssl=stdlib_client_context(pki, client_cert), server_hostname="localhost"
            )
            writer.write(b"hello")
            answer = await reader.read(5)
            local = writer.get_extra_info("sockname")
            writer.close()
            return answer, local

    answer, local = run(main())
    assert answer == b"hello"
    assert seen["version"] == "TLSv1.3" and seen["cipher"][1] == "TLSv1.3" and not seen["reused"]
    assert seen["peername"][:2] == local[:2]
    assert dict(pair[0] for pair in seen["peercert"]["subject"])["commonName"] == "client one"
    assert seen["getpeercert"] == seen["peercert"]


def test_a_paused_verify_cut_by_the_handshake_timeout_fails_closed_with_an_alert(
    run: Run, pki: PKI, server_cert: Issued, client_cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    forever = asyncio.Event

    async def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        await forever().wait()
        return True

    async def main() -> tuple[Any, pausetls.ServerStats]:
        ctx = mutual_context(pki, server_cert, None, verify)
        async with await pasyncio.start_server(echo, "127.0.0.1", 0, context=ctx, handshake_timeout=0.3) as server:
            got = await outcome(port_of(server), stdlib_client_context(pki, client_cert, pausetls.TLS1_2_VERSION))
            return got, server.stats

    with caplog.at_level(logging.INFO, "pausetls.server"):
        got, stats = run(main())
    assert got == "SSLError", got  # TLS 1.2: the alert ends the client's handshake (never an answer)
    assert stats.handshakes_timed_out == 1 and stats.handshakes_completed == 0
    failures = [r.getMessage() for r in caplog.records if "handshake failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].endswith("reason=handshake timed out"), failures


GEVENT_BLOCKED = """
import asyncio, ssl, sys
sys.modules["gevent"] = None  # any import of gevent now fails
import pausetls, pausetls.asyncio

async def verify(conn, x509, errnum, depth, ok):
    await asyncio.sleep(0.01)
    return bool(ok)

async def echo(reader, writer):
    writer.write(await reader.read(100))
    await writer.drain()
    writer.close()

async def main(chain, key, ca, client_chain, client_key):
    ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(chain)
    ctx.use_privatekey_file(key)
    ctx.load_verify_locations(ca)
    ctx.set_verify(pausetls.VERIFY_PEER | pausetls.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
    client = ssl.create_default_context(cafile=ca)
    client.load_cert_chain(client_chain, client_key)
    async with await pausetls.asyncio.start_server(echo, "127.0.0.1", 0, context=ctx) as server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        writer.write(b"ping")
        print((await reader.read(100)).decode(), sorted(m for m in sys.modules if m.startswith("gevent")))
        writer.close()

asyncio.run(main(*sys.argv[1:]))
"""


def test_pausetls_asyncio_imports_and_serves_with_gevent_blocked(
    pki: PKI, server_cert: Issued, client_cert: Issued
) -> None:
    paths = [server_cert.chain_path, server_cert.key_path, pki.ca_path, client_cert.chain_path, client_cert.key_path]
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_BLOCKED, *map(str, paths)],
        cwd=Path(pausetls.__file__).parent.parent,  # this checkout's pausetls
        capture_output=True,
        text=True,
        timeout=GENEROUS,
    )
    assert done.stdout.strip() == "ping ['gevent']", done.stdout + done.stderr  # only the blocked entry


def _failure_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "handshake failed" in r.getMessage()]


def test_an_async_callback_that_raises_ends_that_handshake_with_an_alert_and_one_log_line(
    run: Run, pki: PKI, server_cert: Issued, client_cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    async def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        await asyncio.sleep(0.01)
        raise RuntimeError("revocation service gone")

    async def main() -> tuple[Any, bytes, pausetls.ServerStats]:
        ctx = mutual_context(pki, server_cert, None, verify)
        async with await pasyncio.start_server(echo, "127.0.0.1", 0, context=ctx) as server:
            port = port_of(server)
            refused = await outcome(port, stdlib_client_context(pki, client_cert, pausetls.TLS1_2_VERSION))
            # the next connection (no client certificate asked of it) is unharmed
            open_ctx = make_server_context(server_cert)
            async with await pasyncio.start_server(echo, "127.0.0.1", 0, context=open_ctx) as other:
                served = await ping(port_of(other), stdlib_client_context(pki))
            return refused, served, server.stats

    with caplog.at_level(logging.INFO, "pausetls.server"):
        refused, served, stats = run(main())
    assert refused == "SSLError" and served == b"ping"
    assert stats.callback_errors == 1 and stats.handshakes_failed == 1
    lines = _failure_lines(caplog)
    assert len(lines) == 1 and "verify" in lines[0] and "revocation service gone" in lines[0], lines


def test_closing_the_server_cancels_a_paused_handshake_which_fails_closed(
    run: Run, pki: PKI, server_cert: Issued, client_cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> tuple[Any, pausetls.ServerStats, bool]:
        paused = asyncio.Event()
        cancelled = asyncio.Event()

        async def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
            paused.set()
            try:
                await asyncio.Event().wait()  # never answers
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return True

        ctx = mutual_context(pki, server_cert, None, verify)
        server = await pasyncio.start_server(echo, "127.0.0.1", 0, context=ctx)
        client = asyncio.create_task(outcome(port_of(server), stdlib_client_context(pki, client_cert)))
        await paused.wait()
        server.close()
        await server.wait_closed()
        return await client, server.stats, cancelled.is_set()

    with caplog.at_level(logging.INFO, "pausetls.server"):
        got, stats, cancelled = run(main())
    assert cancelled
    assert got in ("SSLError", b""), got  # never an answer
    assert stats.handshakes_cancelled == 1 and stats.handshakes_completed == 0
    assert len(_failure_lines(caplog)) == 1


def test_open_connection_with_an_async_verify_resumes_its_session(
    run: Run, pki: PKI, server_cert: Issued, peers: Any, tls_version: int
) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(server_cert.chain_path), str(server_cert.key_path))
    server_ctx.minimum_version = server_ctx.maximum_version = {
        pausetls.TLS1_2_VERSION: ssl.TLSVersion.TLSv1_2,
        pausetls.TLS1_3_VERSION: ssl.TLSVersion.TLSv1_3,
    }[tls_version]

    def greet(conn: ssl.SSLSocket) -> None:
        conn.sendall(b"hi")
        conn.recv(10)  # until the client closes

    stdlib = peers.stdlib_server(server_ctx, greet, connections=3)
    depths: list[int] = []

    async def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        await asyncio.sleep(0.01)  # e.g. an OCSP or CT lookup
        depths.append(depth)
        return bool(ok)

    async def main() -> tuple[list[bool], Any]:
        ctx = _client_context(pki)
        ctx.set_verify(pausetls.VERIFY_PEER, verify)
        reused, session = [], None
        for _ in range(2):
            reader, writer = await pasyncio.open_connection(
                "127.0.0.1", stdlib.port, context=ctx, server_hostname="localhost", session=session
            )
            assert await reader.readexactly(2) == b"hi"  # TLS 1.3: the ticket came before it
            tls = writer.get_extra_info("ssl_object")
            reused.append(tls.session_reused)
            session = tls.get_session()
            writer.close()
            await writer.wait_closed()
        refusing = _client_context(pki)
        refusing.set_verify(pausetls.VERIFY_PEER, _refuse)
        try:
            await pasyncio.open_connection("127.0.0.1", stdlib.port, context=refusing, server_hostname="localhost")
        except pausetls.Error as exc:
            return reused, exc
        raise AssertionError("a verify callback that said no let the connection through")

    reused, refused = run(main())
    assert reused == [False, True]
    assert depths and set(depths) <= {0, 1, 2}  # the first (full) handshake ran the async verify
    assert isinstance(refused, pausetls.Error), refused


async def _refuse(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
    await asyncio.sleep(0)
    return False


def _client_context(pki: PKI) -> pausetls.Context:
    return pausetls.client_context(str(pki.ca_path))


def test_async_ocsp_callbacks_on_both_sides(run: Run, pki: PKI, server_cert: Issued) -> None:
    from hook_clients import ocsp_response

    staple = ocsp_response(pki, server_cert)
    seen: list[bytes] = []

    async def status(conn: pausetls.TLSSocket, data: Any) -> bytes:
        await asyncio.sleep(0.01)  # "ask the CA's responder"
        return staple

    async def check(conn: pausetls.TLSSocket, stapled: bytes, data: Any) -> bool:
        await asyncio.sleep(0.01)  # the client's own policy service
        seen.append(stapled)
        return stapled == staple

    async def main() -> bytes:
        ctx = make_server_context(server_cert)
        ctx.set_ocsp_server_callback(status)
        client_ctx = _client_context(pki)
        client_ctx.set_ocsp_client_callback(check)
        async with await pasyncio.start_server(echo, "127.0.0.1", 0, context=ctx) as server:
            reader, writer = await pasyncio.open_connection(
                "127.0.0.1", port_of(server), context=client_ctx, server_hostname="localhost"
            )
            writer.write(b"ping")
            answer = await reader.readexactly(4)
            writer.close()
            await writer.wait_closed()
            return answer

    assert run(main()) == b"ping"
    assert seen == [staple]


def test_cancelling_a_client_whose_verify_is_paused_fails_closed_with_an_alert(
    run: Run, pki: PKI, server_cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> pausetls.ServerStats:
        paused = asyncio.Event()

        async def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
            paused.set()
            await asyncio.Event().wait()  # never answers
            return True

        client_ctx = _client_context(pki)
        client_ctx.set_verify(pausetls.VERIFY_PEER, verify)
        async with await pasyncio.start_server(
            echo, "127.0.0.1", 0, context=make_server_context(server_cert)
        ) as server:
            client = asyncio.create_task(
                pasyncio.open_connection("127.0.0.1", port_of(server), context=client_ctx, server_hostname="localhost")
            )
            await paused.wait()
            client.cancel()
            with pytest.raises(asyncio.CancelledError):
                await client
            await _until(lambda: server.stats.handshakes_failed == 1)
            return server.stats

    with caplog.at_level(logging.INFO, "pausetls.server"):
        stats = run(main())
    assert stats.handshakes_completed == 0
    [line] = _failure_lines(caplog)
    assert "alert handshake failure" in line, line  # the client's verify failed closed: its alert reached us


def _garbage_after_handshake(port: int, ctx: ssl.SSLContext) -> bytes:
    """A blocking stdlib client: handshake and echo, then a record that does not decrypt."""
    with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as sock:
        tls = ctx.wrap_socket(sock, server_hostname="localhost")
        tls.sendall(b"ping")
        assert tls.recv(4) == b"ping"
        with socket.socket(fileno=tls.detach()) as raw:
            raw.settimeout(GENEROUS)
            raw.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # application data with a bad MAC
            try:
                return raw.recv(100)  # the server's alert (or its close)
            except ConnectionResetError:
                return b""


def test_a_bad_record_ends_that_connection_with_one_count_and_one_log_line(
    run: Run, pki: PKI, server_cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> tuple[bytes, bytes, pausetls.ServerStats]:
        loop = asyncio.get_running_loop()
        async with await pasyncio.start_server(
            echo, "127.0.0.1", 0, context=make_server_context(server_cert)
        ) as server:
            port = port_of(server)
            tls12 = stdlib_client_context(pki, version=pausetls.TLS1_2_VERSION)  # its alerts are not encrypted
            answer = await loop.run_in_executor(None, _garbage_after_handshake, port, tls12)
            await _until(lambda: server.stats.connection_errors == 1)
            return answer, await ping(port, stdlib_client_context(pki)), server.stats

    with caplog.at_level(logging.INFO, "pausetls.server"):
        alert, served, stats = run(main())
    assert alert[:1] in (b"\x15", b""), alert  # an alert record, never data
    assert served == b"ping" and stats.connection_errors == 1
    lines = [r.getMessage() for r in caplog.records if "connection failed" in r.getMessage()]
    assert len(lines) == 1 and "TLSError" in lines[0], lines


def test_max_handshakes_holds_the_others_in_the_backlog(
    run: Run, pki: PKI, server_cert: Issued, client_cert: Issued
) -> None:
    limit, clients = 2, 8
    gate = AsyncGate(limit)  # the first two must be inside together, or the gate times out
    seen: list[int] = []

    async def main() -> list[bytes]:
        server: pasyncio.Server | None = None

        async def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
            assert server is not None
            seen.append(server.stats.handshaking)  # never beyond the limit
            if depth == 0 and not gate.opened:
                await gate.arrive()
            return bool(ok)

        ctx = mutual_context(pki, server_cert, None, verify)
        server = await pasyncio.start_server(echo, "127.0.0.1", 0, context=ctx, max_handshakes=limit)
        return await _served(server, [ping(port_of(server), stdlib_client_context(pki, client_cert)) for _ in range(8)])

    assert run(main()) == [b"ping"] * clients
    assert gate.most_inside == limit and max(seen) == limit
