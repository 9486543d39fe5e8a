"""The same hook, fault and fail-closed checks under every driver: gevent, threads and asyncio.

Each hook returns a pending result its driver waits for (`drivers.later`), so every handshake here
pauses inside OpenSSL; the clients are CPython's ``ssl`` (cooperative through gevent.ssl) and openssl.
"""

from __future__ import annotations

from typing import Any

import gevent.socket
import pytest
from OpenSSL import crypto

import pausetls

from conftest import make_server_context, stdlib_client_context
from drivers import later, never
from health import Watch
from hook_clients import client_error, fetch_cn, ocsp_response, s_client, site_contexts, switch_to_site
from peers import PeerGroup
from pki import PKI, Issued
from reliability import mutual_context, outcome, ping

pytestmark = pytest.mark.timing


def test_a_pausing_verify_admits_the_trusted_client_and_refuses_the_rogue(
    driver: str, start: Any, pki: PKI, server_cert: Issued, client_cert: Issued, untrusted_client_cert: Issued,
    watch: Watch, tls_version: int,
) -> None:  # fmt: skip
    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> Any:
        return later(driver, bool(ok))

    server = start(mutual_context(pki, server_cert, tls_version, verify))
    assert ping(server.server_port, stdlib_client_context(pki, client_cert, tls_version, cooperative=True)) == b"ping"
    since = watch.mark(server)
    rogue = outcome(
        server.server_port, stdlib_client_context(pki, untrusted_client_cert, tls_version, cooperative=True)
    )
    assert rogue in (b"", "SSLError", "ConnectionResetError"), rogue  # never b"ping"
    watch.one_failure(server, since, "verification_failures")


def test_a_pausing_sni_callback_picks_the_certificate_and_refuses_an_unknown_name(
    driver: str, start: Any, pki: PKI, server_cert: Issued, watch: Watch
) -> None:
    sites = site_contexts(pki, ("one.example", "two.example"))
    ctx = make_server_context(server_cert)
    ctx.set_tlsext_servername_callback(lambda conn: later(driver, switch_to_site(conn, sites)))
    server = start(ctx)
    client_ctx = stdlib_client_context(pki, cooperative=True)
    assert [fetch_cn(server.server_port, client_ctx, name) for name in sites] == list(sites)
    since = watch.mark(server)
    assert "unrecognized name" in str(client_error(server.server_port, client_ctx, "three.example"))
    watch.one_failure(server, since)


def test_a_pausing_alpn_callback_chooses_the_protocol(driver: str, start: Any, pki: PKI, server_cert: Issued) -> None:
    ctx = make_server_context(server_cert)
    ctx.set_alpn_select_callback(lambda conn, offered: later(driver, b"h2" if b"h2" in offered else None))
    server = start(ctx)
    client_ctx = stdlib_client_context(pki, cooperative=True)
    client_ctx.set_alpn_protocols(["http/1.1", "h2"])
    with gevent.socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
        with client_ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"


def test_a_pausing_client_hello_callback_that_says_no_sends_handshake_failure(
    driver: str, start: Any, pki: PKI, server_cert: Issued, watch: Watch
) -> None:
    ctx = make_server_context(server_cert)
    ctx.set_client_hello_callback(lambda conn, hello: later(driver, "localhost" not in (hello.server_name or "")))
    server = start(ctx)
    since = watch.mark(server)
    error = client_error(server.server_port, stdlib_client_context(pki, cooperative=True))
    assert "handshake failure" in str(error).lower(), error
    assert "client_hello" in watch.one_failure(server, since)


def test_a_verify_that_fails_after_its_pause_sends_an_alert_and_logs_one_line(
    driver: str, start: Any, pki: PKI, server_cert: Issued, client_cert: Issued, watch: Watch
) -> None:
    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> Any:
        return later(driver, error=RuntimeError("revocation service gone"))

    server = start(mutual_context(pki, server_cert, pausetls.TLS1_2_VERSION, verify))
    since = watch.mark(server)
    client_ctx = stdlib_client_context(pki, client_cert, pausetls.TLS1_2_VERSION, cooperative=True)
    assert outcome(server.server_port, client_ctx) == "SSLError"  # the alert, never an answer
    assert "revocation service gone" in watch.one_failure(server, since, "callback_errors")


@pytest.mark.parametrize("driver", ["gevent", "asyncio"])  # an OS thread cannot be cut mid-callback
def test_a_verify_paused_past_the_handshake_deadline_fails_closed(
    driver: str, start: Any, pki: PKI, server_cert: Issued, client_cert: Issued, watch: Watch
) -> None:
    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> Any:
        return never(driver)

    server = start(mutual_context(pki, server_cert, pausetls.TLS1_2_VERSION, verify), handshake_timeout=0.3)
    since = watch.mark(server)
    client_ctx = stdlib_client_context(pki, client_cert, pausetls.TLS1_2_VERSION, cooperative=True)
    assert outcome(server.server_port, client_ctx) in ("SSLError", b""), "the client got in"
    watch.one_failure(server, since, "handshakes_timed_out")


def test_a_pausing_ocsp_callback_staples_what_s_client_sees(
    driver: str, start: Any, pki: PKI, server_cert: Issued, openssl: str, peers: PeerGroup
) -> None:
    staple = ocsp_response(pki, server_cert)
    ctx = make_server_context(server_cert)
    ctx.set_ocsp_server_callback(lambda conn, data: later(driver, staple))
    server = start(ctx)
    code, output = s_client(
        openssl, peers, server.server_port, "-servername", "localhost", "-CAfile", str(pki.ca_path),
        "-verify_return_error", "-status",
    )  # fmt: skip
    assert code == 0, output
    assert "OCSP Response Status: successful" in output and "Cert Status: good" in output, output


def test_a_pausing_certificate_callback_that_says_no_sends_internal_error(
    driver: str, start: Any, pki: PKI, server_cert: Issued, watch: Watch
) -> None:
    ctx = make_server_context(server_cert)
    ctx.set_certificate_callback(lambda conn: later(driver, False))
    server = start(ctx)
    since = watch.mark(server)
    assert "internal error" in str(client_error(server.server_port, stdlib_client_context(pki, cooperative=True)))
    assert "the certificate callback returned False" in watch.one_failure(server, since)


@pytest.mark.parametrize("driver", ["gevent", "asyncio"])  # an OS thread cannot be cut mid-callback
def test_the_callback_timeout_cuts_a_pause_with_internal_error(
    driver: str, start: Any, pki: PKI, server_cert: Issued, watch: Watch
) -> None:
    ctx = make_server_context(server_cert)
    ctx.set_tlsext_servername_callback(lambda conn: never(driver))
    ctx.set_callback_timeout(0.2)
    server = start(ctx)
    since = watch.mark(server)
    assert "internal error" in str(client_error(server.server_port, stdlib_client_context(pki, cooperative=True)))
    assert "servername callback raised TimeoutError" in watch.one_failure(server, since, "callback_errors")


def test_the_key_log_of_a_paused_handshake_equals_the_clients(
    driver: str, start: Any, pki: PKI, server_cert: Issued, tls_version: int, tmp_path: Any
) -> None:
    """The key log hook (never pausable) runs inside handshakes that pause in another hook, under every driver."""
    lines: list[bytes] = []
    ctx = make_server_context(server_cert, tls_version)
    ctx.set_alpn_select_callback(lambda conn, offered: later(driver, None))  # every handshake pauses here
    ctx.set_keylog_callback(lambda conn, line: lines.append(line))
    ctx.keylog_filename = str(tmp_path / "server.keys")
    server = start(ctx)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    client.set_alpn_protocols(["http/1.1"])
    client.keylog_filename = str(tmp_path / "client.keys")
    assert ping(server.server_port, client) == b"ping"

    def logged(name: str) -> list[str]:
        return sorted(line for line in (tmp_path / name).read_text().splitlines() if not line.startswith("#"))

    assert logged("server.keys") == logged("client.keys") == sorted(line.decode() for line in lines)
    assert len(lines) == (1 if tls_version == pausetls.TLS1_2_VERSION else 5)
