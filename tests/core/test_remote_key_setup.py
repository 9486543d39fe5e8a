"""Remote private keys: how they are set up on a context, and what takes over from what.

libssl holds one private key per certificate type (RSA, EC): whichever of ``use_privatekey`` and
``use_remote_private_key`` comes last holds the key of its type, and each type keeps its own
signer.  Static RSA key exchange is off only while the RSA key is remote.  Peers: ``openssl
s_client`` (it can offer a single cipher or signature scheme, which picks the certificate) and
CPython's ``ssl``.
"""

from __future__ import annotations

import gc
import re
import ssl
from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket
import gevent.ssl
import pytest
from key_service import sign as sign_locally

import pausetls

from conftest import stdlib_client_context
from gates import GENEROUS
from health import Watch
from hook_clients import fetch_cn, internal_error_line, s_client
from peers import PeerGroup
from pki import PKI, Issued

TLS12, TLS13 = pausetls.TLS1_2_VERSION, pausetls.TLS1_3_VERSION
S_FLAG = {TLS12: "-tls1_2", TLS13: "-tls1_3"}
STATIC_RSA = "AES128-GCM-SHA256"
WITH_STATIC_RSA = f"{STATIC_RSA}:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
SCHEME = {"ec": "ecdsa_secp256r1_sha256", "rsa": "rsa_pss_rsae_sha256"}


@pytest.fixture(scope="module")
def rsa_cert(pki: PKI) -> Issued:
    return pki.issue("rsa.localhost", rsa_key=True)


@pytest.fixture(scope="module")
def ec_cert(pki: PKI) -> Issued:
    return pki.issue("ec.localhost")


def recording_signer(cert: Issued, calls: list[str], name: str) -> Callable[[Any, str, bytes], bytes]:
    """A ``sign`` holding *cert*'s key in this process; it notes ``name:scheme`` for each signature."""

    def sign(conn: pausetls.TLSSocket, scheme: str, digest: bytes) -> bytes:
        calls.append(f"{name}:{scheme}")
        return sign_locally(cert.key, scheme, digest)

    return sign


def server_context(cert: Issued, calls: list[str] | None = None, name: str = "") -> pausetls.Context:
    """A server context offering static RSA among its TLS 1.2 suites, holding *cert*'s chain; its key
    is remote, signed as *name* into *calls*, when *calls* is given, else not set yet."""
    ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    ctx.set_cipher_list(WITH_STATIC_RSA)
    ctx.use_certificate_chain_file(cert.chain_path)
    if calls is not None:
        ctx.use_remote_private_key(recording_signer(cert, calls, name))
    return ctx


class Handshakes:
    """``openssl s_client`` handshakes with one server, trusting the test PKI."""

    def __init__(self, openssl: str, peers: PeerGroup, pki: PKI, server: Any) -> None:
        self.args = (openssl, peers, server.server_port, "-CAfile", str(pki.ca_path), "-verify_return_error")

    def ok(self, version: int, *args: str) -> str:
        code, output = s_client(*self.args, S_FLAG[version], *args)
        assert code == 0 and "Verify return code: 0 (ok)" in output, output
        return output

    def refused(self, version: int, *args: str) -> str:
        code, output = s_client(*self.args, S_FLAG[version], *args)
        assert code != 0, output
        return output


@pytest.fixture
def handshakes(openssl: str, peers: PeerGroup, pki: PKI, start_server: Any) -> Callable[[Any], Handshakes]:
    return lambda ctx: Handshakes(openssl, peers, pki, start_server(ctx))


# -- order: the last key set for a certificate type is the one that signs ---------------------


@pytest.mark.parametrize("setter", ["use_privatekey_file", "use_privatekey"])
def test_a_local_key_set_after_a_remote_one_signs_and_brings_static_rsa_back(
    setter: str, tls_version: int, rsa_cert: Issued, handshakes: Callable[[Any], Handshakes]
) -> None:
    calls: list[str] = []
    ctx = server_context(rsa_cert, calls, "remote")
    if setter == "use_privatekey_file":
        ctx.use_privatekey_file(rsa_cert.key_path)
    else:
        ctx.use_privatekey(rsa_cert.key)
    ctx.check_privatekey()
    peer = handshakes(ctx)
    peer.ok(tls_version)
    if tls_version == TLS12:  # the local key decrypts: the user's static RSA suite is offered again
        assert f"Cipher is {STATIC_RSA}" in peer.ok(TLS12, "-cipher", STATIC_RSA)
    assert calls == []  # the remote signer is never asked again


def test_a_remote_key_set_after_a_local_one_signs_and_takes_static_rsa_away(
    tls_version: int, rsa_cert: Issued, handshakes: Callable[[Any], Handshakes]
) -> None:
    calls: list[str] = []
    ctx = server_context(rsa_cert)
    ctx.use_privatekey_file(rsa_cert.key_path)
    ctx.use_remote_private_key(recording_signer(rsa_cert, calls, "remote"))
    peer = handshakes(ctx)
    peer.ok(tls_version)
    assert calls == [f"remote:{SCHEME['rsa']}"]
    assert "handshake failure" in peer.refused(TLS12, "-cipher", STATIC_RSA)


def test_static_rsa_is_off_only_while_the_rsa_key_is_remote(
    ec_cert: Issued, rsa_cert: Issued, handshakes: Callable[[Any], Handshakes]
) -> None:
    """An EC certificate with a remote key beside an RSA certificate with a local one: the local RSA key
    decrypts, so static RSA stays; it goes while the RSA key is remote and comes back after."""
    calls: list[str] = []
    ctx = server_context(ec_cert, calls, "ec")
    ctx.use_certificate_chain_file(rsa_cert.chain_path)
    ctx.use_privatekey_file(rsa_cert.key_path)
    peer = handshakes(ctx)
    assert f"Cipher is {STATIC_RSA}" in peer.ok(TLS12, "-cipher", STATIC_RSA)
    peer.ok(TLS12, "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert calls == [f"ec:{SCHEME['ec']}"]

    ctx.use_remote_private_key(recording_signer(rsa_cert, calls, "rsa"))  # the RSA certificate is the current one
    assert "handshake failure" in peer.refused(TLS12, "-cipher", STATIC_RSA)
    peer.ok(TLS12, "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert calls[1:] == [f"rsa:{SCHEME['rsa']}"]

    ctx.use_privatekey_file(rsa_cert.key_path)
    assert f"Cipher is {STATIC_RSA}" in peer.ok(TLS12, "-cipher", STATIC_RSA)


# -- one remote key per certificate type ------------------------------------------------------


def test_an_ec_and_an_rsa_key_each_keep_their_own_signer(
    tls_version: int, ec_cert: Issued, rsa_cert: Issued, handshakes: Callable[[Any], Handshakes]
) -> None:
    """The client's one signature scheme picks the certificate; its key's signer signs."""
    calls: list[str] = []
    ctx = server_context(ec_cert, calls, "ec")
    ctx.use_certificate_chain_file(rsa_cert.chain_path)
    ctx.use_remote_private_key(recording_signer(rsa_cert, calls, "rsa"))
    gc.collect()  # a signer the context does not hold would be gone now
    peer = handshakes(ctx)
    for name, cert in (("ec", ec_cert), ("rsa", rsa_cert), ("ec", ec_cert)):
        output = peer.ok(tls_version, "-sigalgs", SCHEME[name])
        assert f"CN = {cert.subject_cn}" in output, output
        assert calls.pop() == f"{name}:{SCHEME[name]}" and calls == []


def test_a_handshake_whose_key_lost_its_signer_fails_closed_naming_it(
    tls_version: int, pki: PKI, server_cert: Issued, start_server: Any, watch: Watch
) -> None:
    """The key is replaced while a handshake holds the old one (a copy taken when the connection was
    made): that handshake fails with internal_error and a LookupError; the next uses the new signer."""
    calls: list[str] = []
    ctx = server_context(server_cert, calls, "old")
    replaced: list[bool] = []

    def replace_the_key(conn: pausetls.TLSSocket) -> bool:
        if not replaced:  # the first handshake only
            ctx.use_remote_private_key(recording_signer(server_cert, calls, "new"))
            replaced.append(True)
            gc.collect()
        return True

    ctx.set_certificate_callback(replace_the_key)
    server = start_server(ctx)
    client_ctx = stdlib_client_context(pki, version=tls_version, cooperative=True)
    line = internal_error_line(server, client_ctx, watch)
    pattern = r" reason=private_key_sign callback raised LookupError: no signer for remote key #\d+: replaced"
    assert re.search(pattern, line), line
    assert fetch_cn(server.server_port, client_ctx, "localhost") == server_cert.subject_cn
    assert calls == [f"new:{SCHEME['ec']}"]


# -- post-handshake authentication (TLS 1.3) --------------------------------------------------


def stdlib_pha_server(pki: PKI, server_cert: Issued) -> tuple[gevent.socket.socket, gevent.Greenlet]:
    """A CPython ``ssl`` server that asks for the client certificate after the handshake, then answers
    with the subject it got; (listener, greenlet returning what the server saw)."""
    ctx = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(server_cert.chain_path), str(server_cert.key_path))
    ctx.load_verify_locations(cafile=str(pki.ca_path))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.post_handshake_auth = True  # with CERT_REQUIRED: no certificate asked in the handshake itself
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> str:
        sock, _ = listener.accept()
        with ctx.wrap_socket(sock, server_side=True) as tls:
            assert tls.recv(5) == b"hello" and tls.getpeercert() is None
            tls.verify_client_post_handshake()
            tls.sendall(b"certificate, please")  # the CertificateRequest goes out before these bytes
            assert tls.recv(2) == b"ok"  # the client's Certificate and CertificateVerify came first
            subject = dict(field for rdn in tls.getpeercert()["subject"] for field in rdn)
            tls.sendall(subject["commonName"].encode())
            return str(subject["commonName"])

    return listener, gevent.spawn(serve)


def test_post_handshake_auth_signs_with_the_remote_client_key(
    pki: PKI, server_cert: Issued, client_cert: Issued
) -> None:
    calls: list[str] = []
    ctx = pausetls.client_context(str(pki.ca_path))
    ctx.use_certificate_chain_file(client_cert.chain_path)
    ctx.use_remote_private_key(recording_signer(client_cert, calls, "client"))
    assert ctx.get_post_handshake_auth() is False
    ctx.set_post_handshake_auth(True)
    assert ctx.get_post_handshake_auth() is True
    listener, server = stdlib_pha_server(pki, server_cert)
    try:
        with pausetls.connect(listener.getsockname(), ctx, server_hostname="localhost", timeout=GENEROUS) as tls:
            tls.sendall(b"hello")
            assert calls == []  # nothing signed in the handshake: no certificate was asked then
            assert tls.recv(100) == b"certificate, please"  # this read answered the request
            tls.sendall(b"ok")
            assert tls.recv(100) == client_cert.subject_cn.encode()
        assert server.get(timeout=GENEROUS) == client_cert.subject_cn
    finally:
        server.kill()
        listener.close()
    assert calls == [f"client:{SCHEME['ec']}"]


def test_without_post_handshake_auth_the_server_cannot_ask(pki: PKI, server_cert: Issued, client_cert: Issued) -> None:
    ctx = pausetls.client_context(str(pki.ca_path))
    ctx.use_certificate_chain_file(client_cert.chain_path)
    ctx.use_privatekey(client_cert.key)
    listener, server = stdlib_pha_server(pki, server_cert)
    try:
        with pausetls.connect(listener.getsockname(), ctx, server_hostname="localhost", timeout=GENEROUS) as tls:
            tls.sendall(b"hello")
            server.join(timeout=GENEROUS)
        assert isinstance(server.exception, ssl.SSLError), server.exception
        assert server.exception.reason == "EXTENSION_NOT_RECEIVED", server.exception
    finally:
        server.kill()
        listener.close()
