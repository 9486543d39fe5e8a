"""How `pausetls.WSGIServer`'s responses are cut into TLS records, seen by a stdlib ``ssl`` client.

The client runs CPython's TLS over memory BIOs on a gevent socket (in this thread's hub, beside the
server), so it sees the raw records: it hands them to ``ssl`` one at a time and counts those that
decrypt to response bytes (TLS 1.3 session tickets are application-data records too, carrying none).
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from gevent import socket
from gevent.event import Event

import pausetls

from conftest import STDLIB_VERSIONS, make_server_context, stdlib_client_context
from gates import GENEROUS
from pki import PKI, Issued

StartResponse = Callable[..., Any]
HEADER = struct.Struct("!BHH")  # content type, legacy version, length
APPLICATION_DATA = 23


class RecordClient:
    """A TLS client over memory BIOs that reads the server's reply record by record."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=GENEROUS)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.raw = b""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self.incoming.write(self._recv())
        self._flush()

    def _recv(self) -> bytes:
        data: bytes = self.sock.recv(65536)
        assert data, "the server closed the connection"
        return data

    def _flush(self) -> None:
        if pending := self.outgoing.read():
            self.sock.sendall(pending)

    def request(self, request: bytes) -> None:
        self.tls.write(request)
        self._flush()

    def data_records(self) -> Iterator[bytes]:
        """The plaintext of each record that carries response bytes, as it arrives."""
        while True:
            while len(self.raw) < HEADER.size or len(self.raw) < HEADER.size + HEADER.unpack_from(self.raw)[2]:
                self.raw += self._recv()
            content_type, _, length = HEADER.unpack_from(self.raw)
            record, self.raw = self.raw[: HEADER.size + length], self.raw[HEADER.size + length :]
            assert content_type == APPLICATION_DATA
            self.incoming.write(record)
            plaintext = b""
            try:
                while chunk := self.tls.read(65536):
                    plaintext += chunk
            except ssl.SSLWantReadError:
                pass
            if plaintext:
                yield plaintext

    def close(self) -> None:
        self.sock.close()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


@pytest.fixture
def serve(
    start_server: Callable[..., Any], server_cert: Issued, pki: PKI, tls_version: int
) -> Iterator[Callable[..., RecordClient]]:
    """Serve *app*; return a connected `RecordClient` (closed at teardown)."""
    clients: list[RecordClient] = []

    def start(app: Callable[..., Iterable[bytes]]) -> RecordClient:
        server = start_server(make_server_context(server_cert), app, server_class=pausetls.WSGIServer, log=None)
        clients.append(RecordClient(server.server_port, stdlib_client_context(pki, version=tls_version)))
        return clients[-1]

    yield start
    for client in clients:
        client.close()


def test_head_and_body_in_one_record(serve: Callable[..., RecordClient], tls_version: int) -> None:
    body = b"hello, one record"

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    client = serve(app)
    assert client.tls.version() == STDLIB_VERSIONS[tls_version].name.replace("_", ".")
    client.request(get("/"))
    first = next(client.data_records())
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first.endswith(b"\r\n\r\n" + body)  # the whole response: head and body in one record


def test_a_large_body_fills_the_head_s_record_and_follows_whole(serve: Callable[..., RecordClient]) -> None:
    body = bytes(range(256)) * 400  # 100 KiB: more than a record

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]

    client = serve(app)
    client.request(get("/large"))
    records = client.data_records()
    response = next(records)
    assert len(response) == 16384 and response.startswith(b"HTTP/1.1 200 OK\r\n")  # the head and the body's start
    while len(response.split(b"\r\n\r\n", 1)[1]) < len(body):
        response += next(records)
    assert response.split(b"\r\n\r\n", 1)[1] == body


def test_a_streamed_response_still_flows_chunk_by_chunk(serve: Callable[..., RecordClient]) -> None:
    """The second chunk is produced only after the client has received the first one."""
    first_received = Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])  # no length: chunked
        yield b"first"
        assert first_received.wait(GENEROUS), "the client never saw the first chunk"
        yield b"second"

    client = serve(app)
    client.request(get("/stream"))
    records = client.data_records()
    head_and_first = next(records)
    assert b"Transfer-Encoding: chunked" in head_and_first
    assert head_and_first.endswith(b"\r\n\r\n5\r\nfirst\r\n")  # the head and the first chunk: one record
    first_received.set()
    rest = b""
    while not rest.endswith(b"0\r\n\r\n"):
        rest += next(records)
    assert rest == b"6\r\nsecond\r\n0\r\n\r\n"
