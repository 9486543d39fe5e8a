"""Clients for the hook tests, shared by the files that drive hooks (tests/core/test_hooks.py, the
driver-neutral suite, the asyncio tests): a stdlib client reading the certificate it got, the error a
refused one saw, ``openssl s_client`` run to the end of its handshake, and a real OCSP response; and
the server side of SNI they share: one context per site name, and an SNI callback a thread answers."""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import gevent.socket
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

import pausetls

from conftest import make_server_context
from gates import GENEROUS
from peers import PeerGroup
from pki import PKI, Issued


def cn_of(peercert: dict[str, Any]) -> str:
    return str(dict(rdn[0] for rdn in peercert["subject"])["commonName"])


def fetch_cn(port: int, ctx: ssl.SSLContext, name: str) -> str:
    """Handshake as *name* (SNI, hostname checked), exchange a ping, return the server certificate's CN."""
    with gevent.socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as sock:
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            tls.sendall(b"ping")
            assert tls.recv(100) == b"ping"
            return cn_of(tls.getpeercert())


def client_error(port: int, ctx: ssl.SSLContext, name: str = "localhost") -> BaseException:
    """What a stdlib client sees when the handshake (or, TLS 1.3 client auth, the first read) fails."""
    try:
        fetch_cn(port, ctx, name)
    except (ssl.SSLError, ConnectionError) as exc:
        return exc
    raise AssertionError("the handshake should have failed")


def internal_error_line(server: Any, ctx: ssl.SSLContext, watch: Any) -> str:
    """A stdlib client's handshake with *server* meets internal_error from a failed callback (`health.Watch`
    counts it under ``callback_errors``); the server's log line for it."""
    since = watch.mark(server)
    error = client_error(server.server_port, ctx)
    assert isinstance(error, ssl.SSLError) and error.reason == "TLSV1_ALERT_INTERNAL_ERROR", error
    return str(watch.one_failure(server, since, "callback_errors"))


def site_contexts(pki: PKI, names: Iterable[str]) -> dict[str, pausetls.Context]:
    """A server context per name, each with a certificate for that name alone: what an SNI callback picks from."""
    return {name: make_server_context(pki.issue(name, names=(name,))) for name in names}


def switch_to_site(conn: pausetls.TLSSocket, sites: dict[str, pausetls.Context]) -> bool:
    """In an SNI callback: move *conn* to the context of the name it asked for; False for a name not in *sites*."""
    name = (conn.get_servername() or b"").decode()
    if name not in sites:
        return False
    conn.set_context(sites[name])
    return True


class ThreadAnsweredSNI:
    """An SNI callback that hands back a *pool* thread's future, done (True) once the test sets `release`."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.asked, self.release = threading.Event(), threading.Event()

    def __call__(self, conn: pausetls.TLSSocket) -> Future[bool]:
        self.asked.set()
        return self.pool.submit(self.release.wait, GENEROUS)  # True once released


def s_client(openssl: str, peers: PeerGroup, port: int, *args: str) -> tuple[int, str]:
    """Run ``openssl s_client`` until the handshake ends (stdin closed); its exit code and all its output."""
    client = peers.process([openssl, "s_client", "-connect", f"127.0.0.1:{port}", *args])
    client.close_stdin()
    code = client.wait()
    return code, client.stdout.text + client.stderr.text


def ocsp_response(pki: PKI, cert: Issued) -> bytes:
    """A real, signed OCSP response: *cert* is good, says its issuer."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=cert.cert,
            issuer=pki.intermediate.cert,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now - datetime.timedelta(minutes=5),
            next_update=now + datetime.timedelta(days=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, pki.intermediate.cert)
    )
    return builder.sign(pki.intermediate.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
