"""gevent's server signature: ``ssl_context=`` and ``certfile=``/``keyfile=``/``ca_certs=``/``cert_reqs=``/
``ciphers=``/... on `TLSServer`, `WSGIServer` and `ThreadedTLSServer`, against stdlib ``ssl`` and curl."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import pausetls

from conftest import make_server_context, stdlib_client_context, wait_until
from gates import GENEROUS
from peers import run_in_thread
from pki import PKI, Issued
from servers import require_binary

SERVER_CLASSES = [pausetls.TLSServer, pausetls.ThreadedTLSServer, pausetls.WSGIServer]


def exchange(pki: PKI, port: int, *, client: Issued | None = None, version: int | None = None) -> tuple[str, bytes]:
    """A stdlib client: send a line, read the echo; (TLS version, echo)."""
    ctx = stdlib_client_context(pki, client, version)
    with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"ping\n")
            with tls.makefile("rb") as reader:
                return str(tls.version()), reader.readline()


def peer_subject_echo(tls: pausetls.TLSSocket, address: Any) -> None:
    """Echo one line, prefixed with the client certificate's common name (or "-")."""
    cert = tls.getpeercert()
    name = dict(part[0] for part in cert["subject"])["commonName"] if cert else "-"
    tls.sendall(name.encode() + b":" + tls.recv(100))


@pytest.mark.parametrize("server_class", [pausetls.TLSServer, pausetls.ThreadedTLSServer], ids=["gevent", "threads"])
def test_certfile_and_keyfile_build_the_context_as_gevent_does(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued, tls_version: int, server_class: type[Any]
) -> None:
    server = start_server(
        None,
        peer_subject_echo,
        server_class=server_class,
        certfile=str(server_cert.chain_path),
        keyfile=str(server_cert.key_path),
    )
    version, echoed = run_in_thread(partial(exchange, pki, server.server_port, version=tls_version))
    assert echoed == b"-:ping\n"
    assert version == {pausetls.TLS1_2_VERSION: "TLSv1.2", pausetls.TLS1_3_VERSION: "TLSv1.3"}[tls_version]


def test_keyfile_defaults_to_certfile(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued, tmp_path: Path
) -> None:
    combined = tmp_path / "combined.pem"  # gevent (and stdlib ssl) read the key from the certificate file then
    combined.write_bytes(server_cert.chain_path.read_bytes() + server_cert.key_path.read_bytes())
    server = start_server(None, peer_subject_echo, certfile=str(combined))
    assert run_in_thread(partial(exchange, pki, server.server_port))[1] == b"-:ping\n"


def test_cert_reqs_required_turns_away_clients_without_a_trusted_certificate(
    start_server: Callable[..., Any],
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    untrusted_client_cert: Issued,
    tls_version: int,
) -> None:
    server = start_server(
        None,
        peer_subject_echo,
        certfile=str(server_cert.chain_path),
        keyfile=str(server_cert.key_path),
        ca_certs=str(pki.ca_path),
        cert_reqs=ssl.CERT_REQUIRED,
    )
    assert run_in_thread(partial(exchange, pki, server.server_port, client=client_cert, version=tls_version))[1] == (
        b"client one:ping\n"
    )
    for intruder in (None, untrusted_client_cert):
        with pytest.raises((ssl.SSLError, ConnectionError)):  # TLS 1.3: the alert arrives at the first read
            run_in_thread(partial(exchange, pki, server.server_port, client=intruder, version=tls_version))
    assert server.stats.handshakes_completed == 1
    assert server.stats.handshakes_failed == 2
    assert server.stats.verification_failures == 1  # the untrusted one; the other sent no certificate at all


def test_ciphers_choose_the_tls_1_2_suite(start_server: Callable[..., Any], pki: PKI, server_cert: Issued) -> None:
    chosen = "ECDHE-ECDSA-CHACHA20-POLY1305"
    seen: list[Any] = []

    def handle(tls: pausetls.TLSSocket, address: Any) -> None:
        seen.append(tls.cipher())
        peer_subject_echo(tls, address)

    certfile, keyfile = str(server_cert.chain_path), str(server_cert.key_path)
    server = start_server(None, handle, certfile=certfile, keyfile=keyfile, ciphers=chosen)
    run_in_thread(partial(exchange, pki, server.server_port, version=pausetls.TLS1_2_VERSION))
    assert seen[0][0] == chosen


@pytest.mark.parametrize("server_class", SERVER_CLASSES, ids=["TLSServer", "ThreadedTLSServer", "WSGIServer"])
def test_a_stdlib_ssl_context_is_refused_at_construction(server_cert: Issued, server_class: type[Any]) -> None:
    stdlib = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for keyword in ("context", "ssl_context"):
        with pytest.raises(TypeError, match=r"pausetls\.Context, not a stdlib ssl\.SSLContext.*certfile=/keyfile="):
            server_class(("127.0.0.1", 0), lambda *args: None, **{keyword: stdlib})
    ctx = make_server_context(server_cert)
    with pytest.raises(TypeError, match="would be ignored"):
        server_class(("127.0.0.1", 0), lambda *args: None, ssl_context=ctx, certfile=str(server_cert.chain_path))
    with pytest.raises(TypeError, match="needs a server certificate"):
        server_class(("127.0.0.1", 0), lambda *args: None)
    with pytest.raises(TypeError, match="unexpected keyword"):
        server_class(("127.0.0.1", 0), lambda *args: None, certfile=str(server_cert.chain_path), cafile="x")
    with pytest.raises(ValueError, match="ca_certs"):
        server_class(
            ("127.0.0.1", 0), lambda *args: None, certfile=str(server_cert.chain_path), cert_reqs=ssl.CERT_REQUIRED
        )


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"{environ['wsgi.url_scheme']} {environ['SERVER_PROTOCOL']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def test_wsgi_server_takes_ssl_context_and_certfile(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued
) -> None:
    curl = require_binary("curl")
    by_context = start_server(
        None, hello_app, server_class=pausetls.WSGIServer, log=None, ssl_context=make_server_context(server_cert)
    )
    by_files = start_server(
        None,
        hello_app,
        server_class=pausetls.WSGIServer,
        log=None,
        certfile=str(server_cert.chain_path),
        keyfile=str(server_cert.key_path),
    )
    for server in (by_context, by_files):
        url = f"https://localhost:{server.server_port}/"
        argv = [
            curl,
            "-sS",
            "--cacert",
            str(pki.ca_path),
            "--resolve",
            f"localhost:{server.server_port}:127.0.0.1",
            url,
        ]
        result = run_in_thread(partial(subprocess.run, argv, capture_output=True, timeout=GENEROUS, check=False))
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"https HTTP/1.1"


@pytest.mark.parametrize("suppress", [True, False])
def test_suppress_ragged_eofs_reaches_the_handler(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued, suppress: bool
) -> None:
    outcome: list[Any] = []

    def handle(tls: pausetls.TLSSocket, address: Any) -> None:
        tls.sendall(tls.recv(100))
        try:
            outcome.append(tls.recv(100))
        except pausetls.TruncatedStreamError as exc:
            outcome.append(type(exc))

    server = start_server(
        None,
        handle,
        certfile=str(server_cert.chain_path),
        keyfile=str(server_cert.key_path),
        suppress_ragged_eofs=suppress,
    )
    run_in_thread(partial(exchange, pki, server.server_port))  # the stdlib closes without close_notify
    assert wait_until(lambda: bool(outcome))
    assert outcome == [b"" if suppress else pausetls.TruncatedStreamError]


@pytest.mark.parametrize("server_class", [pausetls.TLSServer, pausetls.ThreadedTLSServer], ids=["gevent", "threads"])
def test_do_handshake_on_connect_false_hands_over_before_the_handshake(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued, server_class: type[Any]
) -> None:
    states: list[bool] = []

    def handle(tls: pausetls.TLSSocket, address: Any) -> None:
        states.append(tls.handshake_done)
        data = tls.recv(100)  # the handshake runs here
        states.append(tls.handshake_done)
        tls.sendall(data)

    certfile, keyfile = str(server_cert.chain_path), str(server_cert.key_path)
    server = start_server(
        None, handle, server_class=server_class, certfile=certfile, keyfile=keyfile, do_handshake_on_connect=False
    )
    assert run_in_thread(partial(exchange, pki, server.server_port))[1] == b"ping\n"
    assert states == [False, True]
