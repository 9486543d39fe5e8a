"""Two greenlets writing to one TLS connection at once: each buffer goes out whole, in order."""

from __future__ import annotations

import socket
from typing import Any

import gevent
import gevent.socket
from gevent.event import Event

import pausetls

from conftest import make_server_context, stdlib_client_context
from health import Watch
from pki import PKI, Issued
from reliability import HOST

SIZE = 4 * 1024 * 1024
SECOND_SIZE = SIZE - 12345  # a length of its own: the second write cannot pass for a retry of the first
SMALL_BUFFER = 64 * 1024  # far below SIZE: the first writer must wait for the client to read


def test_two_greenlets_sending_at_once_each_get_their_whole_buffer_out_in_order(
    pki: PKI, server_cert: Issued, start_server: Any, watch: Watch, tls_version: int
) -> None:
    """Writer *a* fills the socket and waits to retry; then writer *b* starts, and a reader reads the
    client's message meanwhile (full duplex); only then does the client start reading."""
    first, second = b"a" * SIZE, b"b" * SECOND_SIZE
    first_started, second_started, message_read = Event(), Event(), Event()
    failures: list[BaseException] = []

    def write(data: bytes, started: Event, after: Event | None, tls: pausetls.TLSSocket) -> None:
        if after is not None:
            after.wait()
        started.set()
        try:
            tls.sendall(data)
        except BaseException as exc:  # reported by the test, then to gevent
            failures.append(exc)
            raise

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        tls.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        writers = [
            gevent.spawn(write, first, first_started, None, tls),
            gevent.spawn(write, second, second_started, first_started, tls),
        ]
        assert tls.recv(10) == b"ping"  # while both writers wait
        message_read.set()
        gevent.joinall(writers, timeout=30)
        assert all(writer.successful() for writer in writers), failures

    server = start_server(make_server_context(server_cert, tls_version), handler)
    ctx = stdlib_client_context(pki, cooperative=True)
    sock = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.settimeout(30)
    sock.connect((HOST, server.server_port))
    with ctx.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False) as tls:
        tls.sendall(b"ping")
        for event in (first_started, second_started, message_read):
            assert event.wait(timeout=30)
        received = bytearray()
        while len(received) < SIZE + SECOND_SIZE:
            chunk = tls.recv(1024 * 1024)
            assert chunk, f"stream ended after {len(received)} bytes"
            received += chunk
    assert not failures, failures
    assert received[:SIZE] == first, "the first buffer did not arrive whole"
    assert received[SIZE:] == second, "the second buffer did not arrive whole after it"
    assert server.stats.connection_errors == 0
