"""The data path's fast path: a read or write that calls back nothing makes no `Job` under a one-thread
driver, and one is made, inside the running C call, as soon as a callback runs there (and may pause)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import ssl
from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket
import pytest
from cryptography.x509.oid import NameOID
from gevent.event import Event

import pausetls
from pausetls.core._binding import lib
from pausetls.core._job import Job
from pausetls.drivers.gevent import gevent_driver

from conftest import make_server_context, stdlib_client_context
from pki import PKI, Issued
from reliability import HOST

ROUND_TRIPS = 20
PAUSE = 0.01


@pytest.fixture
def jobs_made(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., int]]:
    """The C function of every job a TLS socket makes for one of its calls, in order."""
    made: list[Callable[..., int]] = []
    joined = Job.joined.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Job], fn: Callable[..., int], *args: Any, **kwargs: Any) -> Job:
        made.append(fn)
        job: Job = joined(cls, fn, *args, **kwargs)
        return job

    monkeypatch.setattr(Job, "joined", classmethod(counting))
    return made


def _connect(port: int, pki: PKI, client: Issued | None = None) -> Any:
    ctx = stdlib_client_context(pki, client, cooperative=True)
    ctx.post_handshake_auth = True  # TLS 1.3: the server may ask for the certificate later
    sock = gevent.socket.create_connection((HOST, port), timeout=30)
    return ctx.wrap_socket(sock, server_hostname="localhost")


@pytest.mark.parametrize(
    ("server_class", "jobs_per_call"),
    [
        pytest.param(pausetls.TLSServer, 0, id="gevent"),
        # another thread may close the connection during a call: every call is a job it can wait for
        pytest.param(pausetls.ThreadedTLSServer, 1, id="threads"),
    ],
)
def test_reads_and_writes_that_call_back_nothing_make_no_job(
    server_class: type[Any],
    jobs_per_call: int,
    jobs_made: list[Callable[..., int]],
    pki: PKI,
    server_cert: Issued,
    start_server: Any,
    tls_version: int,
) -> None:
    during_echo: list[list[Callable[..., int]]] = []

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        before = len(jobs_made)
        for _ in range(ROUND_TRIPS):
            tls.sendall(tls.recv(65536))
        during_echo.append(jobs_made[before:])

    server = start_server(make_server_context(server_cert, tls_version), handler, server_class=server_class)
    with _connect(server.server_port, pki) as tls:
        for i in range(ROUND_TRIPS):
            message = b"message %d" % i
            tls.sendall(message)
            assert tls.recv(100) == message
        assert tls.recv(100) == b""  # the handler has returned: the server closed with close_notify
    assert len(during_echo) == 1
    calls = set(during_echo[0])
    if jobs_per_call:
        assert {lib.SSL_read_ex, lib.SSL_write_ex} <= calls  # at least one job per read and per write
        assert len(during_echo[0]) >= 2 * ROUND_TRIPS
    else:
        assert during_echo == [[]]


def test_a_callback_inside_an_established_connection_pauses_in_a_job_made_for_its_call(
    jobs_made: list[Callable[..., int]],
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    tls_version: int,
) -> None:
    """TLS 1.3 post-handshake auth and TLS 1.2 renegotiation (the certificate arrives inside a read): the
    verify callback runs in the job of the call it interrupts, made at its first callback, and pauses."""
    seen: list[tuple[bool, Any, int]] = []
    others_ran: list[int] = []
    made_in_request: list[Callable[..., int]] = []

    def verify(conn: pausetls.TLSSocket, x509: Any, errnum: int, depth: int, ok: int) -> bool:
        job = pausetls.current_job()
        seen.append((job is not None and job is conn.job, job.fn if job else None, depth))
        ticker = gevent.spawn(others_ran.append, depth)  # runs only if this callback really pauses
        gevent.sleep(PAUSE)
        ticker.join(0)
        return bool(ok)

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        assert tls.recv(100) == b"one"
        before = len(jobs_made)
        tls.request_client_certificate(verify)
        tls.sendall(b"requested")
        second = tls.recv(100)  # TLS 1.3: the certificate is verified inside this read
        made_in_request.extend(jobs_made[before:])
        cert = tls.get_peer_certificate()
        name = cert.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME) if cert else []
        tls.sendall(second + b" " + (str(name[0].value).encode() if name else b"-"))

    ctx = make_server_context(server_cert, tls_version)
    ctx.load_verify_locations(str(pki.ca_path))
    server = start_server(ctx, handler)
    with _connect(server.server_port, pki, client_cert) as tls:
        tls.sendall(b"one")
        assert tls.recv(100) == b"requested"  # the client answered the request while reading this
        tls.sendall(b"two")
        assert tls.recv(100) == f"two {client_cert.subject_cn}".encode()
    assert [depth for *_, depth in seen] == [2, 1, 0]
    assert all(is_the_connections for is_the_connections, _, _ in seen)
    # TLS 1.2 too: the server's SSL_do_handshake only sends the HelloRequest, the renegotiation runs in the read
    assert {fn for _, fn, _ in seen} == {lib.SSL_read_ex}
    assert set(made_in_request) == {lib.SSL_read_ex}
    if tls_version == pausetls.TLS1_3_VERSION:  # one job for the whole read, made at its first callback
        assert made_in_request == [lib.SSL_read_ex]  # (TLS 1.2's renegotiation calls back in two reads)
    assert others_ran == [2, 1, 0]


@pytest.mark.parametrize("verify_clients", [False, True], ids=["unverified-peer", "verified-peer"])
def test_a_resumption_under_in_process_ticket_keys_makes_a_job_only_to_verify_the_peer_again(
    tls_version: int,
    verify_clients: bool,
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    jobs_made: list[Callable[..., int]],
) -> None:
    """An in-process `TicketKeys` never waits, and a resumed peer that is not verified is only checked
    against the session's name and context: nothing can pause, so a resumption makes no job.  A verified
    peer is verified again (the verify callback may pause): that runs in a job of the handshake."""
    ctx = make_server_context(server_cert, tls_version)
    ctx.set_ticket_keys(pausetls.TicketKeys.generate())
    if verify_clients:
        ctx.load_verify_locations(str(pki.ca_path))
        ctx.set_verify(pausetls.VERIFY_PEER | pausetls.VERIFY_FAIL_IF_NO_PEER_CERT)
    server = start_server(ctx)
    client = stdlib_client_context(pki, client_cert, cooperative=True)
    session = None
    made_in_resumption: list[Callable[..., int]] = []
    for attempt in ("full", "resumed"):
        jobs_made.clear()
        sock = gevent.socket.create_connection((HOST, server.server_port), timeout=30)
        with client.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"line\n")
            assert tls.recv(100) == b"line\n"  # TLS 1.3: the ticket came before this
            assert tls.session_reused == (attempt == "resumed")
            session = tls.session
        if attempt == "resumed":
            made_in_resumption.extend(jobs_made)
    if verify_clients:
        assert lib.SSL_do_handshake in made_in_resumption
    else:
        assert made_in_resumption == []


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ]


def _malloc_in_use() -> int:
    """Bytes this process has malloc'ed and not freed (glibc's own count: exact, unlike RSS)."""
    gc.collect()
    info = _glibc().mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _glibc() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc 2.33's mallinfo2 to count the heap")
    libc.mallinfo2.restype = _MallInfo2
    return libc


IDLE_CONNECTIONS = 100
READ_SIZE = 65536


def test_a_connection_waiting_in_recv_holds_no_read_buffer(pki: PKI, server_cert: Issued, tls_version: int) -> None:
    """An established connection blocked in recv(65536) (an idle keep-alive connection) waits without the
    64 KB buffer it asked for: the heap does not grow when the servers start waiting."""
    _glibc()
    ctx = make_server_context(server_cert, tls_version)
    client_ctx = stdlib_client_context(pki, cooperative=True)
    pairs = [gevent.socket.socketpair() for _ in range(IDLE_CONNECTIONS)]
    go_idle, served = Event(), []

    def serve(sock: Any) -> None:
        tls = pausetls.TLSSocket(ctx, sock, server_side=True, driver=gevent_driver)
        tls.sendall(tls.recv(READ_SIZE))
        served.append(tls)
        go_idle.wait()
        tls.recv(READ_SIZE)  # waits: the client sends nothing more

    def talk(sock: Any) -> Any:
        tls = client_ctx.wrap_socket(sock, server_hostname="localhost")
        tls.sendall(b"x" * 64)
        assert tls.recv(64) == b"x" * 64
        return tls

    servers = [gevent.spawn(serve, ours) for ours, _ in pairs]
    clients = [gevent.spawn(talk, theirs) for _, theirs in pairs]
    try:
        gevent.joinall(clients, timeout=30, raise_error=True)
        assert len(served) == IDLE_CONNECTIONS
        before = _malloc_in_use()
        go_idle.set()
        gevent.sleep(0.1)  # every server runs into its recv and waits there
        assert all(not server.dead for server in servers)
        per_connection = (_malloc_in_use() - before) / IDLE_CONNECTIONS
        assert per_connection < READ_SIZE / 8, f"{per_connection:.0f} bytes per waiting connection"
    finally:
        gevent.killall(servers)
        for tls in served:
            tls.close()
        for client in clients:
            if client.value is not None:
                client.value.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


@pytest.mark.parametrize("read_ahead", [True, False], ids=["read-ahead", "no-read-ahead"])
def test_unwrap_never_loses_plaintext_that_follows_close_notify(
    read_ahead: bool, pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    """The peer's close_notify and its first plaintext bytes arrive in one segment (a STARTTLS-style
    protocol going back to plaintext): with read-ahead (the default) OpenSSL may have taken those bytes,
    so unwrap refuses loudly; without it, unwrap hands back the socket with the bytes still there."""
    ctx = make_server_context(server_cert, tls_version)
    assert ctx.get_read_ahead()
    ctx.set_read_ahead(read_ahead)
    client_ctx = stdlib_client_context(pki)
    ours, theirs = gevent.socket.socketpair()
    theirs.settimeout(10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")

    def pump() -> None:  # the client's records to the server, the server's to the client
        if outgoing.pending:
            theirs.sendall(outgoing.read())

    def handshake_client() -> None:
        while True:
            try:
                client.do_handshake()
                pump()
                return
            except ssl.SSLWantReadError:
                pump()
                incoming.write(theirs.recv(65536))

    with ours:
        server = pausetls.TLSSocket(ctx, ours, server_side=True, driver=gevent_driver)
        handshaking = gevent.spawn(server.do_handshake)
        handshake_client()
        handshaking.get(timeout=10)
        with pytest.raises(ssl.SSLWantReadError):
            client.unwrap()  # writes close_notify, then wants the server's
        theirs.sendall(outgoing.read() + b"PLAINTEXT")  # one segment: close_notify and what follows
        if read_ahead:
            with pytest.raises(pausetls.TLSError, match="read ahead"):
                server.unwrap()
            server.close()
        else:
            plain = server.unwrap()
            assert plain.recv(100) == b"PLAINTEXT"
    theirs.close()
