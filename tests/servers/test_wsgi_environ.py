"""mod_ssl's variables in `pausetls.WSGIServer`'s environ, as curl's connections see them.

The expected subject, issuer and serial come from ``openssl x509`` (``-nameopt RFC2253``, ``-serial``),
the formats mod_ssl uses, not from pausetls.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import gevent
import gevent.subprocess
import pytest

import pausetls
from pausetls.core.mod_ssl_environ import mod_ssl_environ, serial_hex

from conftest import make_server_context, stdlib_client_context
from curl import client_cert_args, curl_argv, json_bodies, tls_version_args
from gates import GENEROUS
from pki import PKI, Issued

StartResponse = Callable[..., Any]

VERSIONS = {"1.2": pausetls.TLS1_2_VERSION, "1.3": pausetls.TLS1_3_VERSION}


def ssl_environ_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The request's mod_ssl variables as JSON, and whether they were computed once for the connection."""
    tls = environ["pausetls.connection"]
    seen = {key: value for key, value in environ.items() if key == "HTTPS" or key.startswith("SSL_")}
    seen["connection_version"] = tls.version()
    seen["computed_once"] = mod_ssl_environ(tls) is mod_ssl_environ(tls)
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def run_curl(*args: Any) -> list[dict[str, Any]]:
    """curl's JSON responses; gevent's subprocess, so this thread's hub serves meanwhile."""
    result = gevent.subprocess.run(curl_argv(*args), capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return json_bodies(result.stdout)


def openssl_x509(openssl: str, cert: Issued, *options: str) -> str:
    output = subprocess.run(
        [openssl, "x509", "-noout", "-in", str(cert.cert_path), *options], capture_output=True, text=True, check=True
    ).stdout
    return output.strip().split("=", 1)[1]


def lenient_client_auth(server_cert: Issued, pki: PKI, version: int | None = None) -> pausetls.Context:
    """Asks for a client certificate, and (like a careless application) accepts any, even a failing one."""
    ctx = make_server_context(server_cert, version)
    ctx.load_verify_locations(str(pki.ca_path))
    ctx.set_verify(pausetls.VERIFY_PEER, lambda conn, x509, errnum, depth, ok: True)
    return ctx


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_client_certificate_sni_and_resumption(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued, client_cert: Issued, openssl: str, version: str
) -> None:
    server = start_server(
        lenient_client_auth(server_cert, pki, VERSIONS[version]),
        ssl_environ_app,
        server_class=pausetls.WSGIServer,
        log=None,
    )
    url = f"https://localhost:{server.server_port}/"
    # Connection: close makes curl open a second connection, which offers the first one's session
    first, second = run_curl(
        *tls_version_args(version),
        *client_cert_args(pki, client_cert),
        "--resolve",
        f"localhost:{server.server_port}:127.0.0.1",
        "-H",
        "Connection: close",
        url,
        url,
    )
    assert first["HTTPS"] == "on"
    assert first["SSL_PROTOCOL"] == first["connection_version"] == f"TLSv{version}"
    assert first["SSL_CIPHER"]
    assert first["SSL_TLS_SNI"] == "localhost"
    assert first["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert first["SSL_CLIENT_S_DN"] == openssl_x509(openssl, client_cert, "-subject", "-nameopt", "RFC2253")
    assert first["SSL_CLIENT_I_DN"] == openssl_x509(openssl, client_cert, "-issuer", "-nameopt", "RFC2253")
    assert first["SSL_CLIENT_M_SERIAL"] == openssl_x509(openssl, client_cert, "-serial")
    assert first["SSL_CLIENT_CERT"] == client_cert.cert_path.read_text()
    assert first["computed_once"] is True
    assert (first["SSL_SESSION_RESUMED"], second["SSL_SESSION_RESUMED"]) == ("Initial", "Resumed")
    assert int(first["SSL_SESSION_ID"], 16) and first["SSL_SESSION_ID"] == first["SSL_SESSION_ID"].lower()
    assert second["SSL_CLIENT_VERIFY"] == "SUCCESS"  # a resumed session keeps its verified client
    assert second["SSL_CLIENT_S_DN"] == first["SSL_CLIENT_S_DN"]
    assert server.stats.resumed == 1


def test_no_client_certificate_and_no_sni(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued, tls_version: int
) -> None:
    server = start_server(
        make_server_context(server_cert, tls_version), ssl_environ_app, server_class=pausetls.WSGIServer, log=None
    )
    # curl sends no SNI for an IP address
    (seen,) = run_curl("--cacert", pki.ca_path, f"https://127.0.0.1:{server.server_port}/")
    assert seen["HTTPS"] == "on"
    assert seen["SSL_CLIENT_VERIFY"] == "NONE"
    assert seen["SSL_SESSION_RESUMED"] == "Initial"
    assert not {"SSL_TLS_SNI", "SSL_CLIENT_S_DN", "SSL_CLIENT_I_DN", "SSL_CLIENT_CERT", "SSL_CLIENT_M_SERIAL"} & set(
        seen
    )


def test_an_untrusted_certificate_reads_failed_not_success(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued, untrusted_client_cert: Issued
) -> None:
    """An attacker's self-issued certificate on a server whose verify callback lets it through: the
    application is told verification FAILED, with OpenSSL's reason."""
    server = start_server(
        lenient_client_auth(server_cert, pki), ssl_environ_app, server_class=pausetls.WSGIServer, log=None
    )
    (seen,) = run_curl(
        "--cacert", pki.ca_path, "--cert", untrusted_client_cert.chain_path, "--key", untrusted_client_cert.key_path,
        f"https://127.0.0.1:{server.server_port}/",
    )  # fmt: skip
    assert seen["SSL_CLIENT_VERIFY"] == "FAILED:unable to get local issuer certificate"
    assert seen["SSL_CLIENT_S_DN"].endswith("O=pausetls tests")


@pytest.mark.parametrize(
    ("serial", "expected"), [(0, "00"), (1, "01"), (0xABC, "0ABC"), (2**159 - 1, "7F" + "FF" * 19)]
)
def test_serial_as_mod_ssl_prints_it(serial: int, expected: str) -> None:
    assert serial_hex(serial) == expected


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(pausetls.TLS1_2_VERSION, id="renegotiation"),
        pytest.param(pausetls.TLS1_3_VERSION, id="post-handshake-auth"),
    ],
)
def test_a_certificate_requested_later_shows_in_the_variables(
    start_server: Callable[..., Any], pki: PKI, server_cert: Issued, client_cert: Issued, version: int
) -> None:
    """Kept per connection, the variables still follow a client certificate asked for after the handshake."""
    seen: list[Mapping[str, str]] = []
    ctx = make_server_context(server_cert, version)
    ctx.load_verify_locations(str(pki.ca_path))

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        tls.recv(100)
        seen.append(mod_ssl_environ(tls))
        tls.request_client_certificate()
        tls.sendall(b"asked\n")
        tls.recv(100)  # the client's certificate is processed inside this read
        seen.append(mod_ssl_environ(tls))
        tls.sendall(b"done\n")

    server = start_server(ctx, handler)
    client_ctx = stdlib_client_context(pki, client_cert, version)
    client_ctx.post_handshake_auth = True

    def client() -> list[bytes]:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=GENEROUS) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"one\n")
                asked = tls.recv(100)  # answers the certificate request on the way
                tls.sendall(b"two\n")
                return [asked, tls.recv(100)]

    assert gevent.get_hub().threadpool.spawn(client).get(timeout=GENEROUS) == [b"asked\n", b"done\n"]
    before, after = seen
    assert before["SSL_CLIENT_VERIFY"] == "NONE" and "SSL_CLIENT_S_DN" not in before
    assert after["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert after["SSL_CLIENT_S_DN"] == "CN=client one,O=pausetls tests"
