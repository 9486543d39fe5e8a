"""`pausetls.WSGIServer` serving WSGI apps to CPython's ``http.client`` over TLS 1.2 and 1.3.

The test process is not monkey-patched, so the blocking stdlib client runs in
a real thread (gevent's threadpool) while this thread's hub runs the server.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import gevent
import pytest

import pausetls

from conftest import STDLIB_VERSIONS, make_server_context, stdlib_client_context
from pki import PKI, Issued

T = TypeVar("T")
StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

MIB = 1024 * 1024


def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking stdlib client in a real thread; the hub keeps serving meanwhile."""
    return gevent.get_hub().threadpool.spawn(fn).get(timeout=30)  # type: ignore[no-any-return]


def environ_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """GET: a JSON summary of the environ; POST: the request body echoed back."""
    if environ["REQUEST_METHOD"] == "POST":
        body = environ["wsgi.input"].read()
        content_type = "application/octet-stream"
    else:
        keys = ("wsgi.url_scheme", "PATH_INFO", "QUERY_STRING", "SERVER_PORT", "REMOTE_ADDR", "SERVER_PROTOCOL")
        body = json.dumps({key: environ.get(key) for key in keys}).encode()
        content_type = "application/json"
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def streaming_app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
    """64 chunks of 16 KiB without a Content-Length: chunked transfer encoding."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for i in range(64):
        yield bytes([i]) * 16384


@pytest.fixture
def start_wsgi(start_server: Callable[..., Any]) -> Callable[..., pausetls.WSGIServer]:
    """Start WSGIServers on a free loopback port (conftest's `start_server` stops them)."""

    def start(app: App, context: pausetls.Context, **kwargs: Any) -> pausetls.WSGIServer:
        server: pausetls.WSGIServer = start_server(context, app, server_class=pausetls.WSGIServer, log=None, **kwargs)
        return server

    return start


def connection(server: pausetls.WSGIServer, client_context: ssl.SSLContext) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", server.server_port, context=client_context, timeout=10)


def fetch(
    server: pausetls.WSGIServer, client_context: ssl.SSLContext, method: str = "GET", path: str = "/", body: Any = None
) -> tuple[int, str | None, bytes]:
    """One request on a new connection: (status, negotiated TLS version, body)."""

    def request() -> tuple[int, str | None, bytes]:
        conn = connection(server, client_context)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            data = response.read()
            assert isinstance(conn.sock, ssl.SSLSocket)
            return response.status, conn.sock.version(), data
        finally:
            conn.close()

    return in_thread(request)


def test_get(start_wsgi: Callable[..., pausetls.WSGIServer], pki: PKI, server_cert: Issued, tls_version: int) -> None:
    server = start_wsgi(environ_app, make_server_context(server_cert, tls_version))
    status, version, body = fetch(server, stdlib_client_context(pki), path="/some/where?x=1")
    assert status == 200
    assert version == STDLIB_VERSIONS[tls_version].name.replace("_", ".")
    environ = json.loads(body)
    assert environ["PATH_INFO"] == "/some/where"
    assert environ["QUERY_STRING"] == "x=1"
    assert environ["SERVER_PORT"] == str(server.server_port)
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert server.stats.handshakes_completed == 1


def test_url_scheme_is_https(start_wsgi: Callable[..., pausetls.WSGIServer], pki: PKI, server_cert: Issued) -> None:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        seen.append(environ["wsgi.url_scheme"])
        return environ_app(environ, start_response)

    server = start_wsgi(app, make_server_context(server_cert))
    assert server.environ["wsgi.url_scheme"] == "https"
    status, _, body = fetch(server, stdlib_client_context(pki))
    assert status == 200
    assert seen == ["https"]
    assert json.loads(body)["wsgi.url_scheme"] == "https"


def test_keep_alive_two_requests_on_one_connection(
    start_wsgi: Callable[..., pausetls.WSGIServer], pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    server = start_wsgi(environ_app, make_server_context(server_cert, tls_version))

    def two_requests() -> list[tuple[int, str]]:
        conn = connection(server, stdlib_client_context(pki))
        try:
            results, sockets = [], []
            for path in ("/first", "/second"):
                conn.request("GET", path)
                response = conn.getresponse()
                results.append((response.status, json.loads(response.read())["PATH_INFO"]))
                assert not response.will_close
                sockets.append(conn.sock)
            assert sockets[0] is sockets[1]  # http.client reconnects on a new socket otherwise
            return results
        finally:
            conn.close()

    assert in_thread(two_requests) == [(200, "/first"), (200, "/second")]
    assert server.stats.accepted == 1
    assert server.stats.handshakes_completed == 1


def test_post_one_mib_echoed(
    start_wsgi: Callable[..., pausetls.WSGIServer], pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    """Large reads (the request body) and large writes (the same bytes back) across many records."""
    server = start_wsgi(environ_app, make_server_context(server_cert, tls_version))
    payload = os.urandom(MIB)
    status, _, body = fetch(server, stdlib_client_context(pki), method="POST", path="/echo", body=payload)
    assert status == 200
    assert len(body) == MIB
    assert body == payload


def test_streamed_chunked_response(
    start_wsgi: Callable[..., pausetls.WSGIServer], pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    server = start_wsgi(streaming_app, make_server_context(server_cert, tls_version))
    status, _, body = fetch(server, stdlib_client_context(pki))
    assert status == 200
    assert body == b"".join(bytes([i]) * 16384 for i in range(64))


def test_untrusted_client_is_refused_and_server_keeps_serving(
    start_wsgi: Callable[..., pausetls.WSGIServer], pki: PKI, server_cert: Issued
) -> None:
    """A client that rejects the certificate costs one failed handshake, nothing more."""
    server = start_wsgi(environ_app, make_server_context(server_cert))
    with pytest.raises(ssl.SSLCertVerificationError):
        fetch(server, ssl.create_default_context())  # the system CAs do not know the test PKI
    status, _, _ = fetch(server, stdlib_client_context(pki))
    assert status == 200
    assert server.stats.handshakes_failed == 1
    assert server.stats.handshakes_completed == 1


def test_server_sends_close_notify_on_connection_close(
    start_wsgi: Callable[..., pausetls.WSGIServer], pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    server = start_wsgi(environ_app, make_server_context(server_cert, tls_version))
    client_context = stdlib_client_context(pki)

    def read_to_eof() -> bytes:
        raw = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
        with client_context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):  # SSLEOFError if the server closes without close_notify
                data += chunk
            return data

    assert in_thread(read_to_eof).startswith(b"HTTP/1.1 200")
