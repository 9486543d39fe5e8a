"""`pausetls.Connection`: pyOpenSSL's ``Connection(context, socket)`` against stdlib ``ssl`` peers.

On a gevent socket it runs on the gevent driver, on a plain one on the
threads driver; reads raise pyOpenSSL's `ZeroReturnError` / `SysCallError` /
`WantReadError`.  The example scripts are in ``test_pyopenssl_examples.py``.
"""

from __future__ import annotations

import errno
import pickle
import select
import socket
import ssl
import threading
from typing import Any

import gevent
import gevent.socket
import pytest
from gevent.event import AsyncResult, Event

import pausetls
from pausetls.drivers.threads import thread_driver

from conftest import STDLIB_VERSIONS, make_server_context, stdlib_client_context
from gates import GENEROUS
from peers import PeerGroup, run_in_thread
from pki import PKI, Issued


def client_context(pki: PKI) -> pausetls.Context:
    ctx = pausetls.Context(pausetls.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(pki.ca_path)
    ctx.set_verify(pausetls.VERIFY_PEER)
    return ctx


def stdlib_server_context(cert: Issued, version: int, seen_names: list[str | None]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert.chain_path), str(cert.key_path))
    ctx.minimum_version = ctx.maximum_version = STDLIB_VERSIONS[version]
    ctx.sni_callback = lambda sock, name, ctx: seen_names.append(name)  # type: ignore[assignment,misc,return-value]
    return ctx


def test_connection_on_a_gevent_socket_speaks_pyopenssl_and_resumes(
    peers: PeerGroup, pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    names: list[str | None] = []
    seen: list[tuple[str | None, str, bool]] = []

    def echo_then_close_notify(conn: ssl.SSLSocket) -> None:
        cipher = conn.cipher()
        assert cipher is not None
        seen.append((conn.version(), cipher[0], conn.session_reused))
        conn.sendall(conn.recv(100))
        conn.unwrap()  # close_notify, then waits for the client's

    server = peers.stdlib_server(
        stdlib_server_context(server_cert, tls_version, names), echo_then_close_notify, connections=2
    )
    ctx = client_context(pki)
    with pytest.raises(TypeError, match="needs a socket"):
        pausetls.Connection(ctx)

    sessions: list[pausetls.Session] = []
    for attempt in range(2):
        conn = pausetls.Connection(ctx, gevent.socket.socket())
        assert conn.driver is pausetls.gevent_driver
        with pytest.raises(TypeError):
            conn.set_tlsext_host_name("localhost")  # type: ignore[arg-type]  # pyOpenSSL takes bytes only
        conn.set_tlsext_host_name(b"localhost")
        if sessions:
            conn.set_session(pickle.loads(pickle.dumps(sessions[0])))  # a session survives a pickle
        conn.connect(("127.0.0.1", server.port))
        conn.do_handshake()
        conn.sendall(b"ping\n")
        assert conn.recv(100) == b"ping\n"
        with pytest.raises(pausetls.ZeroReturnError):
            conn.recv(100)
        version, cipher, reused = seen[attempt]
        assert (conn.get_protocol_version_name(), conn.get_cipher_name()) == (version, cipher)
        assert conn.get_protocol_version() == tls_version
        assert conn.session_reused is reused is (attempt == 1)
        sessions.append(conn.get_session())  # type: ignore[arg-type]
        assert conn.shutdown() is True  # the server's close_notify came first
        conn.close()
    server.join()
    assert names == ["localhost", "localhost"]


@pytest.mark.parametrize("server_ends", ["close_notify", "tcp_close"])
def test_connection_on_a_plain_socket_blocks_its_thread(
    peers: PeerGroup, pki: PKI, server_cert: Issued, server_ends: str
) -> None:
    def echo_then_end(conn: ssl.SSLSocket) -> None:
        conn.sendall(conn.recv(100))
        if server_ends == "close_notify":
            conn.unwrap()
        # else the stdlib closes the socket without close_notify: a truncation for the client

    server = peers.stdlib_server(stdlib_server_context(server_cert, pausetls.TLS1_3_VERSION, []), echo_then_end)

    def talk() -> type[BaseException]:
        conn = pausetls.Connection(client_context(pki), socket.create_connection(("127.0.0.1", server.port)))
        assert conn.driver is thread_driver
        try:
            conn.set_connect_state()
            conn.sendall(b"hello\n")  # the handshake runs inside the first write
            assert conn.recv(100) == b"hello\n"
            with pytest.raises(pausetls.Error) as ended:
                conn.recv(100)
            return ended.type
        finally:
            conn.close()

    ended = run_in_thread(talk)
    server.join()
    if server_ends == "close_notify":
        assert ended is pausetls.ZeroReturnError
    else:
        assert ended is pausetls.SysCallError  # pyOpenSSL's name for a connection cut under TLS


def test_non_blocking_connection_raises_want_read_until_the_peer_answers(pki: PKI, server_cert: Issued) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    conn = pausetls.Connection(client_context(pki), socket.socket())
    conn.setblocking(False)
    try:
        assert conn.connect_ex(listener.getsockname()) in (0, errno.EINPROGRESS)
        raw, _ = listener.accept()
        select.select([], [conn], [], GENEROUS)  # connected
        with pytest.raises(pausetls.WantReadError):
            conn.do_handshake()  # the ClientHello is out; nobody answers yet: the server has not started TLS
        assert issubclass(pausetls.WantReadError, BlockingIOError)

        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(str(server_cert.chain_path), str(server_cert.key_path))
        served: list[bytes] = []
        thread = threading.Thread(target=lambda: served.append(_serve_one_line(server_ctx, raw)), daemon=True)
        thread.start()
        while True:
            try:
                conn.do_handshake()
                break
            except pausetls.WantReadError:
                assert select.select([conn], [], [], GENEROUS)[0], "the server never answered"
        conn.send(b"done\n")
        thread.join(GENEROUS)
        assert served == [b"done\n"]
    finally:
        conn.close()
        listener.close()


def _serve_one_line(context: ssl.SSLContext, raw: socket.socket) -> bytes:
    raw.settimeout(GENEROUS)
    with context.wrap_socket(raw, server_side=True) as tls:
        return tls.recv(100)


def test_accepted_gevent_connection_pauses_its_handshake_callback(pki: PKI, server_cert: Issued) -> None:
    """A server-side Connection from ``accept()`` on a gevent socket: its SNI callback waits for another
    greenlet, which only runs if the handshake really paused."""
    ctx = make_server_context(server_cert)
    entered, decision = Event(), AsyncResult()

    def servername(conn: pausetls.TLSSocket) -> Any:
        entered.set()
        return decision  # pending: the handshake pauses until it is set

    ctx.set_tlsext_servername_callback(servername)
    listener = pausetls.Connection(ctx, gevent.socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def approve() -> None:
        entered.wait()
        decision.set(True)

    def client() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as raw:
            ctx = stdlib_client_context(pki, version=pausetls.TLS1_3_VERSION)
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"hi\n")
                return tls.recv(100)

    approver = gevent.spawn(approve)
    peer = gevent.get_hub().threadpool.spawn(client)
    conn, _ = listener.accept()
    try:
        assert conn.server_side and conn.driver is pausetls.gevent_driver
        assert conn.recv(100) == b"hi\n"  # the handshake, callback pause included, runs inside the read
        assert conn.get_servername() == b"localhost"
        conn.sendall(b"bye\n")
        assert peer.get(timeout=GENEROUS) == b"bye\n"
        approver.get(timeout=GENEROUS)
    finally:
        conn.close()
        listener.close()


def test_set_accept_state_on_an_accepted_plain_socket(pki: PKI, server_cert: Issued, tls_version: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    answers: list[bytes] = []

    def stdlib_client() -> None:
        ctx = stdlib_client_context(pki, version=tls_version)
        with socket.create_connection(listener.getsockname(), timeout=GENEROUS) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"question\n")
                answers.append(tls.recv(100))
                tls.unwrap()  # close_notify both ways

    thread = threading.Thread(target=stdlib_client, daemon=True)
    thread.start()
    raw, _ = listener.accept()
    conn = pausetls.Connection(make_server_context(server_cert), raw)
    try:
        conn.set_accept_state()
        conn.do_handshake()
        assert conn.server_side and conn.driver is thread_driver
        assert conn.get_protocol_version() == tls_version
        conn.sendall(conn.recv(100).replace(b"question", b"answer"))
        with pytest.raises(pausetls.ZeroReturnError):
            conn.recv(100)
        assert conn.shutdown() is True
    finally:
        conn.close()
        listener.close()
    thread.join(GENEROUS)
    assert answers == [b"answer\n"]
