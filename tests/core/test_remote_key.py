"""Remote private keys: the server (or client) holds its certificate, something else signs.

The signer is a key service in another process (``tests/key_service.py``, CPython + cryptography,
no pausetls) reached over TCP from the ``sign`` callback, or a callback in this process where a test
needs a wrong signature.  Peers: CPython's ``ssl`` (cooperative through ``gevent.ssl``), ``openssl
s_client`` and ``openssl s_server -Verify 1``.  ECDSA and RSA, TLS 1.2 and 1.3.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from key_service import sign as sign_locally

import pausetls

from conftest import stdlib_client_context
from drivers import later, never
from gates import GENEROUS
from health import Watch
from hook_clients import client_error, fetch_cn, internal_error_line, s_client
from peers import Peer, PeerGroup
from pki import PKI, Issued
from servers import require_binary

KEY_SERVICE = Path(__file__).resolve().parent.parent / "key_service.py"
TLS12, TLS13 = pausetls.TLS1_2_VERSION, pausetls.TLS1_3_VERSION
S_FLAG = {TLS12: "-tls1_2", TLS13: "-tls1_3"}
CLIENTS = 60


# -- the key service -------------------------------------------------------------


def signature_of(reply_line: bytes) -> bytes:
    reply = json.loads(reply_line)
    if "error" in reply:
        raise RuntimeError(f"key service: {reply['error']}")
    return bytes.fromhex(reply["signature"])


class KeyService:
    """``tests/key_service.py`` in a subprocess, holding *keys*; ``signer(name)`` is a ``sign`` callback."""

    def __init__(self, keys: dict[str, Issued], overlap: int = 0) -> None:
        argv = [sys.executable, str(KEY_SERVICE), f"--overlap={overlap}"]
        self.peer = Peer([*argv, *(f"{name}={issued.key_path}" for name, issued in keys.items())], stdin=False)
        try:
            self.peer.wait_for(lambda: b"\n" in self.peer.stdout.data, "the key service's port")
        except BaseException:
            self.peer.stop()
            raise
        self.address = ("127.0.0.1", int(self.peer.stdout.text.split()[0]))
        self.schemes: list[str] = []

    def stats(self) -> dict[str, Any]:
        """How many it signed, and the most requests it ever had in flight at once."""
        with gevent.socket.create_connection(self.address, timeout=GENEROUS) as sock:
            sock.sendall(b'{"stats": true}\n')
            reply: dict[str, Any] = json.loads(sock.makefile("rb").readline())
        return reply

    def signer(self, name: str, driver: str = "gevent") -> Callable[[pausetls.TLSSocket, str, bytes], Any]:
        """A ``sign`` that asks the service the way *driver* waits: a gevent socket, a blocking socket in
        the connection's thread, or ``async def`` with asyncio streams."""

        def ask(scheme: str, digest: bytes) -> bytes:
            self.schemes.append(scheme)
            return json.dumps({"key": name, "scheme": scheme, "digest": digest.hex()}).encode() + b"\n"

        if driver == "asyncio":

            async def sign_async(conn: pausetls.TLSSocket, scheme: str, digest: bytes) -> bytes:
                reader, writer = await asyncio.open_connection(*self.address)
                try:
                    writer.write(ask(scheme, digest))
                    return signature_of(await reader.readline())
                finally:
                    writer.close()

            return sign_async

        connect = gevent.socket.create_connection if driver == "gevent" else socket.create_connection

        def sign(conn: pausetls.TLSSocket, scheme: str, digest: bytes) -> bytes:
            with connect(self.address, timeout=GENEROUS) as sock:
                sock.sendall(ask(scheme, digest))
                return signature_of(sock.makefile("rb").readline())

        return sign

    def stop(self) -> None:
        self.peer.stop()


@pytest.fixture(scope="module")
def rsa_server_cert(pki: PKI) -> Issued:
    return pki.issue("rsa.localhost", rsa_key=True)


@pytest.fixture(scope="module")
def key_service(server_cert: Issued, rsa_server_cert: Issued, client_cert: Issued) -> Iterator[KeyService]:
    service = KeyService({"ec": server_cert, "rsa": rsa_server_cert, "client": client_cert})
    yield service
    service.stop()


def remote_key_context(cert: Issued, sign: Any, version: int | None = None) -> pausetls.Context:
    """A server context holding *cert*'s chain and no private key: *sign* signs."""
    ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(cert.chain_path)
    ctx.use_remote_private_key(sign)
    ctx.check_privatekey()  # the provider's key matches the certificate's public key
    if version is not None:
        ctx.set_min_proto_version(version)
        ctx.set_max_proto_version(version)
    return ctx


def run_all(fns: list[Callable[[], Any]], timeout: float = 2 * GENEROUS) -> list[Any]:
    greenlets = [gevent.spawn(fn) for fn in fns]
    gevent.joinall(greenlets, timeout=timeout)
    return [g.value if g.successful() else g.exception for g in greenlets]


# -- the point: many handshakes, signed elsewhere, at once -------------------------------


OVERLAP_CASES = [  # every key and version under gevent; the other drivers once each
    *(("gevent", key, version) for key in ("ec", "rsa") for version in (TLS12, TLS13)),
    ("threads", "ec", TLS13),
    ("asyncio", "rsa", TLS12),
]


@pytest.mark.timing
@pytest.mark.parametrize(
    ("driver", "key", "tls_version"),
    OVERLAP_CASES,
    ids=[f"{d}-{k}-TLSv1.{v - 0x301}" for d, k, v in OVERLAP_CASES],
)
def test_60_concurrent_handshakes_are_signed_by_a_key_service_in_another_process(
    driver: str,
    key: str,
    tls_version: int,
    pki: PKI,
    server_cert: Issued,
    rsa_server_cert: Issued,
    start: Any,
) -> None:
    cert = server_cert if key == "ec" else rsa_server_cert
    # the service answers no signature until all 60 are in flight at once: one at a time never gets there
    service = KeyService({key: cert}, overlap=CLIENTS)
    try:
        server = start(remote_key_context(cert, service.signer(key, driver), tls_version))
        client_ctx = stdlib_client_context(pki, version=tls_version, cooperative=True)
        results = run_all([lambda: fetch_cn(server.server_port, client_ctx, "localhost")] * CLIENTS)
        stats = service.stats()
    finally:
        service.stop()
    assert results == [cert.subject_cn] * CLIENTS
    assert stats == {"signed": CLIENTS, "most_in_flight": CLIENTS, "gate_timed_out": False}
    assert server.stats.handshakes_completed == CLIENTS and server.stats.handshakes_failed == 0
    expected = "ecdsa_secp256r1_sha256" if key == "ec" else "rsa_pss_rsae_sha256"
    assert service.schemes == [expected] * CLIENTS


@pytest.mark.parametrize(
    ("curve", "scheme"),
    [(ec.SECP384R1(), "ecdsa_secp384r1_sha384"), (ec.SECP521R1(), "ecdsa_secp521r1_sha512")],
    ids=["P-384", "P-521"],
)
def test_a_p384_or_p521_key_signs_with_the_scheme_tls13_binds_to_its_curve(
    curve: ec.EllipticCurve, scheme: str, pki: PKI, start_server: Any
) -> None:
    """TLS 1.3 ties ECDSA schemes to the curve: libssl reads it from the provider's key (group name)."""
    cert = pki.issue(f"{curve.name}.localhost", curve=curve)
    service = KeyService({"key": cert})
    try:
        server = start_server(remote_key_context(cert, service.signer("key"), pausetls.TLS1_3_VERSION))
        client_ctx = stdlib_client_context(pki, version=pausetls.TLS1_3_VERSION, cooperative=True)
        assert fetch_cn(server.server_port, client_ctx, "localhost") == cert.subject_cn
    finally:
        service.stop()
    assert service.schemes == [scheme]


RSA_SCHEMES = [  # what s_client offers alone, and what s_client then reports
    (TLS12, "rsa_pkcs1_sha384", "Peer signature type: RSA\n", "SHA384"),
    (TLS12, "rsa_pss_rsae_sha512", "Peer signature type: RSA-PSS\n", "SHA512"),
    (TLS13, "rsa_pss_rsae_sha384", "Peer signature type: RSA-PSS\n", "SHA384"),
]


@pytest.mark.parametrize(
    ("tls_version", "scheme", "signature_type", "digest"), RSA_SCHEMES, ids=[row[1] for row in RSA_SCHEMES]
)
def test_an_rsa_key_signs_the_one_scheme_a_client_offers(
    tls_version: int,
    scheme: str,
    signature_type: str,
    digest: str,
    openssl: str,
    peers: PeerGroup,
    pki: PKI,
    rsa_server_cert: Issued,
    key_service: KeyService,
    start_server: Any,
) -> None:
    """PKCS#1 v1.5 (TLS 1.2 only) and PSS with each hash: padding and hash reach the signer as the scheme."""
    key_service.schemes.clear()
    server = start_server(remote_key_context(rsa_server_cert, key_service.signer("rsa")))
    args = [S_FLAG[tls_version], "-sigalgs", scheme, "-CAfile", str(pki.ca_path), "-verify_return_error"]
    code, output = s_client(openssl, peers, server.server_port, *args)
    assert code == 0, output
    assert signature_type in output and f"Peer signing digest: {digest}" in output, output
    assert "Verify return code: 0 (ok)" in output
    assert key_service.schemes == [scheme]


@pytest.mark.parametrize("version", [pausetls.TLS1_2_VERSION, pausetls.TLS1_3_VERSION], ids=["TLSv1.2", "TLSv1.3"])
def test_a_client_certificate_whose_key_is_remote_satisfies_s_server_verify(
    version: int,
    openssl: str,
    peers: PeerGroup,
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    key_service: KeyService,
) -> None:
    key_service.schemes.clear()
    args = ["-cert", str(server_cert.cert_path), "-key", str(server_cert.key_path), "-cert_chain"]
    args += [str(pki.intermediate.cert_path), S_FLAG[version], "-www", "-Verify", "1", "-CAfile", str(pki.ca_path)]
    server = peers.s_server(openssl, [*args, "-verify_return_error"])
    ctx = pausetls.client_context(str(pki.ca_path))
    ctx.use_certificate_chain_file(client_cert.chain_path)
    ctx.use_remote_private_key(key_service.signer("client"))
    with pausetls.connect(("127.0.0.1", server.port), ctx, server_hostname="localhost", timeout=GENEROUS) as tls:
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        page = b""
        while chunk := tls.recv(65536):
            page += chunk
    assert page.startswith(b"HTTP/1.0 200 ok")
    assert f"Subject: O=pausetls tests, CN={client_cert.subject_cn}".encode() in page
    assert key_service.schemes == ["ecdsa_secp256r1_sha256"]


def test_sign_may_return_a_pending_result_under_every_driver(
    driver: str, tls_version: int, pki: PKI, server_cert: Issued, start: Any
) -> None:
    """gevent: an AsyncResult; threads: a Future a thread completes; asyncio: ``async def sign``."""

    def sign(conn: pausetls.TLSSocket, scheme: str, digest: bytes) -> Any:
        return later(driver, sign_locally(server_cert.key, scheme, digest))

    server = start(remote_key_context(server_cert, sign, tls_version))
    client_ctx = stdlib_client_context(pki, version=tls_version, cooperative=True)
    assert fetch_cn(server.server_port, client_ctx, "localhost") == "localhost"


# -- failures ------------------------------------------------------------------------------


CALLBACK_TIMEOUT = 0.2
FAULTS = {  # the fault, and what the server's log line says after "private_key_sign callback raised "
    "raises": "RuntimeError: the HSM is down",
    "fails-after-a-pause": "RuntimeError: the HSM is down",
    # gevent and asyncio cut the callback; a thread cannot be cut, so its wait for the result times out
    "hangs": rf"TimeoutError: (pause )?timed out after {CALLBACK_TIMEOUT} s",
    "returns-a-str": "TypeError: it returned str, expected bytes",
    "returns-too-much": "ValueError: it returned 4096 bytes, expected 1 to 72",
    "returns-none": "TypeError: it returned NoneType, expected bytes",
    "returns-nothing": "ValueError: it returned 0 bytes, expected 1 to 72",
}
RETURNED = {"returns-a-str": "signature", "returns-too-much": bytes(4096), "returns-none": None, "returns-nothing": b""}


@pytest.mark.timing
@pytest.mark.parametrize("fault", FAULTS)
def test_a_faulty_sign_fails_its_handshake_with_internal_error_and_names_itself(
    fault: str, tls_version: int, driver: str, pki: PKI, server_cert: Issued, start: Any, watch: Watch
) -> None:
    """The first handshake meets the fault; the next one (sign behaving again, after a pause) is served."""
    calls: list[str] = []

    def sign(conn: pausetls.TLSSocket, scheme: str, digest: bytes) -> Any:
        calls.append(scheme)
        if len(calls) > 1:
            return later(driver, sign_locally(server_cert.key, scheme, digest))
        if fault == "raises":
            raise RuntimeError("the HSM is down")
        if fault == "fails-after-a-pause":
            return later(driver, error=RuntimeError("the HSM is down"))
        if fault == "hangs":
            return never(driver)
        return RETURNED[fault]

    ctx = remote_key_context(server_cert, sign, tls_version)
    ctx.set_callback_timeout(CALLBACK_TIMEOUT)
    server = start(ctx)
    client_ctx = stdlib_client_context(pki, version=tls_version, cooperative=True)
    line = internal_error_line(server, client_ctx, watch)
    assert re.search(f" reason=private_key_sign callback raised {FAULTS[fault]}$", line), line
    assert fetch_cn(server.server_port, client_ctx, "localhost") == "localhost"  # the server was not wedged
    assert server.stats.handshakes_completed == 1 and server.stats.handshakes_failed == 1


WRONG_SIGNATURES = ["another key", "corrupted", "truncated DER", "PKCS#1 v1.5 for PSS"]


@pytest.mark.parametrize("wrong", WRONG_SIGNATURES)
def test_a_wrong_signature_is_rejected_by_the_client(
    wrong: str,
    tls_version: int,
    pki: PKI,
    other_pki: PKI,
    server_cert: Issued,
    rsa_server_cert: Issued,
    start_server: Any,
    watch: Watch,
) -> None:
    """What a compromised or broken key service returns must not pass: the client checks the signature.
    The server goes on: the next client, signed for properly, is served."""
    cert = rsa_server_cert if wrong == "PKCS#1 v1.5 for PSS" else server_cert
    other = other_pki.issue("localhost")
    schemes: list[str] = []

    def sign(conn: pausetls.TLSSocket, scheme: str, digest: bytes) -> bytes:
        schemes.append(scheme)
        good = sign_locally(cert.key, scheme, digest)
        if len(schemes) > 1:
            return good
        if wrong == "another key":
            return sign_locally(other.key, scheme, digest)
        if wrong == "truncated DER":
            return good[: len(good) // 2]  # the SEQUENCE's length now runs past the end
        if wrong == "PKCS#1 v1.5 for PSS":  # the same size as the PSS block asked for
            return sign_locally(cert.key, scheme.replace("rsa_pss_rsae_", "rsa_pkcs1_"), digest)
        return good[:-1] + bytes([good[-1] ^ 1])  # the DER stays well formed: the last byte of s

    server = start_server(remote_key_context(cert, sign, tls_version))
    since = watch.mark(server)
    client_ctx = stdlib_client_context(pki, version=tls_version, cooperative=True)
    error = client_error(server.server_port, client_ctx)
    assert isinstance(error, ssl.SSLError) and error.reason == "BAD_SIGNATURE", error
    line = watch.one_failure(server, since)  # the client's decrypt_error alert ends the server's handshake
    assert "tlsv1 alert decrypt error" in line, line
    assert fetch_cn(server.server_port, client_ctx, "localhost") == cert.subject_cn
    assert server.stats.handshakes_completed == 1 and server.stats.handshakes_failed == 1
    assert schemes[0] == ("rsa_pss_rsae_sha256" if cert is rsa_server_cert else "ecdsa_secp256r1_sha256")


def test_static_rsa_key_exchange_is_disabled(
    openssl: str, peers: PeerGroup, pki: PKI, rsa_server_cert: Issued, start_server: Any
) -> None:
    """A client that offers only RSA key transport is refused; the remote key is never asked to decrypt."""
    ctx = remote_key_context(
        rsa_server_cert, lambda conn, scheme, digest: sign_locally(rsa_server_cert.key, scheme, digest)
    )
    ctx.set_cipher_list("AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")  # kRSA asked for again: still removed
    server = start_server(ctx)
    code, output = s_client(openssl, peers, server.server_port, "-tls1_2", "-cipher", "AES128-GCM-SHA256")
    assert code != 0 and "handshake failure" in output, output
    code, output = s_client(openssl, peers, server.server_port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert code == 0 and "Cipher is ECDHE-RSA-AES128-GCM-SHA256" in output, output
    with pytest.raises(pausetls.Error, match="static RSA"):
        ctx.set_cipher_list("AES128-GCM-SHA256")
    # refused whole: the list in force before stays (static RSA still out)
    code, output = s_client(openssl, peers, server.server_port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert code == 0 and "Cipher is ECDHE-RSA-AES128-GCM-SHA256" in output, output


def test_use_remote_private_key_needs_the_certificate_first() -> None:
    ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    with pytest.raises(pausetls.Error, match="set the certificate before"):
        ctx.use_remote_private_key(lambda conn, scheme, digest: b"")


def test_check_privatekey_compares_the_remote_key_with_the_certificate(
    server_cert: Issued, client_cert: Issued
) -> None:
    ctx = remote_key_context(server_cert, lambda conn, scheme, digest: b"")
    ctx.check_privatekey()
    # the key stays with the certificate it was made for: another certificate does not match it
    ctx.use_certificate_chain_file(client_cert.chain_path)
    with pytest.raises(pausetls.Error, match="does not match"):
        ctx.check_privatekey()


def test_the_provider_builds_with_openssls_deprecated_apis_hidden(tmp_path: Path) -> None:
    """No EC_KEY_METHOD, RSA_METHOD or any other API OpenSSL 3.0 deprecates: it builds where they are gone."""
    cc = require_binary("cc")
    source = Path(pausetls.__file__).parent / "core" / "_remote_key.c"
    unit = tmp_path / "remote_key_unit.c"
    unit.write_text(
        "#include <openssl/ssl.h>\n"
        + source.read_text()
        # the extern "Python" callback cffi would generate, and uses of what the binding calls
        + "static int pausetls_remote_sign(size_t a, const char *b, const unsigned char *c, size_t d,\n"
        "    unsigned char *e, size_t *f, size_t g) { return 0; }\n"
        "void *pausetls_used[] = {(void *)pausetls_remote_key_new, (void *)pausetls_disable_static_rsa,\n"
        "    (void *)pausetls_remote_signer_for};\n"
    )
    hidden = ["-DOPENSSL_NO_DEPRECATED", "-DOPENSSL_API_COMPAT=30000", "-Wall", "-Werror", "-Wno-unused-parameter"]
    result = subprocess.run([cc, *hidden, "-fsyntax-only", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
