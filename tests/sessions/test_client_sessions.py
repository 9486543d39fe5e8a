"""Client sessions: `pausetls.Session`, ``connect(..., session=)`` and `Context.set_client_session_cache`,
against stdlib ``ssl`` servers and ``openssl s_server`` (TLS 1.2 ids and tickets, TLS 1.3 tickets)."""

from __future__ import annotations

import asyncio
import pickle
import ssl
import time
from typing import Any

import pytest

import pausetls
import pausetls.asyncio

from conftest import STDLIB_VERSIONS
from peers import PeerGroup
from pki import PKI, Issued


def client_context(pki: PKI, *, cache: bool = False) -> pausetls.Context:
    ctx = pausetls.client_context(cafile=str(pki.ca_path))
    if cache:
        ctx.set_client_session_cache()
    return ctx


def talk(port: int, ctx: pausetls.Context, server_hostname: str, **kwargs: Any) -> pausetls.TLSSocket:
    """Connect, send a line and read the answer (TLS 1.3 tickets arrive before it), close with close_notify."""
    tls = pausetls.connect(("127.0.0.1", port), ctx, server_hostname=server_hostname, **kwargs)
    try:
        tls.sendall(b"ping\n")
        assert tls.recv(100).strip() in (b"ping", b"gnip")  # an echo, or s_server -rev's answer
    finally:
        tls.close()
    return tls


def stdlib_echo_server(peers: PeerGroup, cert: Issued, version: int, connections: int) -> tuple[Any, list[bool]]:
    """A stdlib server answering one line per connection; the list is its view of each resumption."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert.chain_path), str(cert.key_path))
    ctx.minimum_version = ctx.maximum_version = STDLIB_VERSIONS[version]
    reused: list[bool] = []

    def echo(conn: ssl.SSLSocket) -> None:
        reused.append(conn.session_reused)
        conn.sendall(conn.recv(100))
        conn.unwrap()

    return peers.stdlib_server(ctx, echo, connections=connections), reused


def test_a_session_resumes_through_bytes_and_pickle(
    peers: PeerGroup, pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    server, server_saw = stdlib_echo_server(peers, server_cert, tls_version, connections=2)
    ctx = client_context(pki)
    first = talk(server.port, ctx, "localhost")
    session = first.session
    assert isinstance(session, pausetls.Session) and session.protocol_version == tls_version
    assert first.session_reused is False
    der = session.to_bytes()
    copy = pickle.loads(pickle.dumps(pausetls.Session.from_bytes(der)))
    assert copy.to_bytes() == der and copy.id == session.id
    assert not copy.expired() and copy.expired(now=time.time() + 10**8)

    second = talk(server.port, ctx, "localhost", session=copy)
    assert second.session_reused is True
    server.join()
    assert server_saw == [False, True]
    with pytest.raises(pausetls.Error, match="not a DER-encoded TLS session"):
        pausetls.Session.from_bytes(b"\x30\x03garbage")
    with pytest.raises(TypeError, match=r"pausetls\.Session"):
        first.set_session(der)  # type: ignore[arg-type]


def test_the_cache_offers_a_session_only_where_it_was_made(
    peers: PeerGroup, pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    server, server_saw = stdlib_echo_server(peers, server_cert, tls_version, connections=4)
    ctx = client_context(pki, cache=True)
    cache = ctx.client_session_cache
    assert cache is not None
    key = ("127.0.0.1", server.port, "localhost")

    talk(server.port, ctx, "localhost")
    assert cache.sessions(key), "the server's session (TLS 1.3: its tickets, read after the handshake) is kept"
    held_before = [s.to_bytes() for s in cache.sessions(key)]
    # another name at the same address: nothing is offered (the stdlib server would resume anything offered)
    assert talk(server.port, ctx, "127.0.0.1").session_reused is False
    assert talk(server.port, ctx, "localhost").session_reused is True
    held_after = [s.to_bytes() for s in cache.sessions(key)]
    if tls_version == pausetls.TLS1_3_VERSION:
        assert held_before[-1] not in held_after  # the ticket just offered is spent: never offered twice
    # control: offered explicitly under the other name, the server would have resumed it (TLS 1.3: an
    # unspent ticket; OpenSSL itself marks a ticket it resumed with not resumable once new ones come)
    assert talk(server.port, ctx, "127.0.0.1", session=cache.sessions(key)[0]).session_reused is True
    server.join()
    assert server_saw == [False, False, True, True]
    assert (cache.stats.offered, cache.stats.reused) == (1, 1)


@pytest.mark.parametrize(
    ("version", "s_server_flags", "ticket"),
    [
        (pausetls.TLS1_2_VERSION, ["-tls1_2", "-no_ticket"], False),
        (pausetls.TLS1_2_VERSION, ["-tls1_2"], True),
        (pausetls.TLS1_3_VERSION, ["-tls1_3"], True),
    ],
    ids=["TLSv1.2-session-id", "TLSv1.2-ticket", "TLSv1.3-ticket"],
)
def test_the_cache_resumes_against_s_server(
    peers: PeerGroup,
    openssl: str,
    pki: PKI,
    server_cert: Issued,
    version: int,
    s_server_flags: list[str],
    ticket: bool,
) -> None:
    args = ["-cert", str(server_cert.cert_path), "-key", str(server_cert.key_path)]
    args += ["-cert_chain", str(pki.intermediate.cert_path), "-rev", *s_server_flags]
    server = peers.s_server(openssl, args, naccept=3)
    ctx = client_context(pki, cache=True)
    cache = ctx.client_session_cache
    assert cache is not None

    reused = [talk(server.port, ctx, "localhost").session_reused for _ in range(3)]
    assert reused == [False, True, True]
    assert (cache.stats.offered, cache.stats.reused) == (2, 2)
    held = cache.sessions(("127.0.0.1", server.port, "localhost"))
    assert held and all(s.protocol_version == version and s.has_ticket() is ticket for s in held)
    server.wait()  # -naccept 3: it exits after the third client, its statistics printed
    if not ticket:  # (ticket resumptions bypass s_server's cache: there the ServerHello is the proof)
        assert b" 2 session cache hits" in server.stdout.data, server.describe()


def test_the_cache_is_bounded(peers: PeerGroup, pki: PKI, server_cert: Issued) -> None:
    server, _ = stdlib_echo_server(peers, server_cert, pausetls.TLS1_3_VERSION, connections=1)
    session = talk(server.port, client_context(pki), "localhost").session
    assert session is not None
    cache = pausetls.ClientSessionCache(max_entries=2, tickets_per_key=2)
    for host in ("a", "b", "c"):
        for _ in range(3):
            cache.add((host, 443, host), pausetls.Session.from_bytes(session.to_bytes()))
    assert [len(cache.sessions((host, 443, host))) for host in ("a", "b", "c")] == [0, 2, 2]
    assert len(cache) == 4
    assert cache.stats.evicted == 2 + 3  # one ticket each for a, b, c beyond two; then a's two with its key
    assert cache.take(("b", 443, "b")) is not None and len(cache.sessions(("b", 443, "b"))) == 1
    with pytest.raises(ValueError, match="server session cache"):
        ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
        ctx.set_session_cache()
        ctx.set_client_session_cache()


def test_the_cache_serves_asyncio_clients_too(peers: PeerGroup, pki: PKI, server_cert: Issued) -> None:
    server, server_saw = stdlib_echo_server(peers, server_cert, pausetls.TLS1_3_VERSION, connections=2)
    ctx = client_context(pki, cache=True)

    async def talk_async() -> bool:
        reader, writer = await pausetls.asyncio.open_connection(
            "127.0.0.1", server.port, context=ctx, server_hostname="localhost"
        )
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"  # the tickets came first
        reused = bool(writer.get_extra_info("ssl_object").session_reused)
        writer.close()
        await writer.wait_closed()
        return reused

    assert [asyncio.run(talk_async()) for _ in range(2)] == [False, True]
    server.join()
    assert server_saw == [False, True]
    assert ctx.client_session_cache is not None and ctx.client_session_cache.stats.reused == 1
