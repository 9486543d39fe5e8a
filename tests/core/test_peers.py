"""Interoperability: every TLS feature against a peer that is not pausetls.

Peers: ``openssl s_client``/``s_server`` and ``curl`` subprocesses (run with
``gevent.subprocess``), and the stdlib `ssl` module in real OS threads.  The
test process is not monkey-patched: every wait yields to gevent so the
in-process `pausetls.TLSServer` keeps serving.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto

import pausetls

from conftest import STDLIB_VERSIONS, make_server_context, require_binary, stdlib_client_context
from peers import DEFAULT_TIMEOUT, PeerGroup, run_in_thread
from pki import PKI, Issued
from reliability import mutual_context

PAUSE = 0.05  # what every pausing callback sleeps on gevent
VERSION_NAME = {pausetls.TLS1_2_VERSION: "TLSv1.2", pausetls.TLS1_3_VERSION: "TLSv1.3"}
S_FLAG = {pausetls.TLS1_2_VERSION: "-tls1_2", pausetls.TLS1_3_VERSION: "-tls1_3"}
CURL_FLAGS = {
    pausetls.TLS1_2_VERSION: ["--tlsv1.2", "--tls-max", "1.2"],
    pausetls.TLS1_3_VERSION: ["--tlsv1.3", "--tls-max", "1.3"],
}
X509_V_ERR_HOSTNAME_MISMATCH = 62


# -- fixtures and helpers ------------------------------------------------------


@pytest.fixture
def curl() -> str:
    return require_binary("curl")


class VerifyRecorder:
    """A verify callback that pauses on gevent, records what it saw, and keeps OpenSSL's verdict."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int, int]] = []
        self.types: set[type] = set()

    def __call__(self, conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        gevent.sleep(PAUSE)
        self.types.add(type(x509))
        self.calls.append((depth, cn_of(x509), errnum, ok))
        return bool(ok)

    def assert_chain(self, pki: PKI, leaf_cn: str) -> None:
        """Called once per certificate, root first, all accepted by OpenSSL."""
        assert all(issubclass(kind, crypto.X509) for kind in self.types)  # decoded lazily: a subclass
        root_cn = pki.root.subject_cn
        intermediate_cn = pki.intermediate.subject_cn
        assert self.calls == [(2, root_cn, 0, 1), (1, intermediate_cn, 0, 1), (0, leaf_cn, 0, 1)]


def cn_of(cert: crypto.X509) -> str:
    return str(cert.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def alpn_select(offers: list[list[bytes]]) -> Callable[[pausetls.TLSSocket, list[bytes]], bytes]:
    """A server ALPN callback that pauses on gevent, then picks http/1.1."""

    def select(conn: pausetls.TLSSocket, offered: list[bytes]) -> bytes:
        gevent.sleep(PAUSE)
        offers.append(offered)
        return b"http/1.1"

    return select


def pausetls_client_context(pki: PKI, version: int, verify: VerifyRecorder | None = None) -> pausetls.Context:
    ctx = pausetls.client_context(str(pki.ca_path))
    ctx.set_min_proto_version(version)
    ctx.set_max_proto_version(version)
    if verify is not None:
        ctx.set_verify(pausetls.VERIFY_PEER, verify)
    return ctx


def stdlib_server_context(cert: Issued, version: int, *, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert.chain_path), str(cert.key_path))
    ctx.minimum_version = ctx.maximum_version = STDLIB_VERSIONS[version]
    if client_ca is not None:
        ctx.load_verify_locations(str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def s_server_args(cert: Issued, pki: PKI, version: int, *mode: str) -> list[str]:
    """``openssl s_server`` serving *cert* (leaf + intermediate) at one TLS version."""
    return [
        "-cert",
        str(cert.cert_path),
        "-key",
        str(cert.key_path),
        "-cert_chain",
        str(pki.intermediate.cert_path),
        S_FLAG[version],
        *mode,
    ]


def s_client_argv(openssl: str, pki: PKI, port: int, version: int, *extra: str) -> list[str]:
    """``openssl s_client`` that verifies the server strictly and treats stdin as plain data.

    ``-quiet -no_ign_eof``: only application data on stdout, and EOF on stdin
    closes the connection with close_notify; ``-nocommands``: lines starting
    with Q, R, k... are data, not commands.
    """
    return [
        openssl,
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        "localhost",
        "-CAfile",
        str(pki.ca_path),
        "-verify_return_error",
        "-verify_hostname",
        "localhost",
        S_FLAG[version],
        "-quiet",
        "-no_ign_eof",
        "-nocommands",
        *extra,
    ]


def client_cert_args(client: Issued, pki: PKI) -> list[str]:
    return [
        "-cert",
        str(client.cert_path),
        "-key",
        str(client.key_path),
        "-cert_chain",
        str(pki.intermediate.cert_path),
    ]


def read_line(sock: Any) -> bytes:
    """Read up to and including a newline (b"" or a partial line at EOF)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_all(sock: Any) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def reverse_lines_handler(conn: ssl.SSLSocket) -> None:
    """What ``s_server -rev`` does, for the stdlib server: each line comes back reversed."""
    while line := read_line(conn):
        conn.sendall(line.rstrip(b"\r\n")[::-1] + b"\n")


def http_handler(tls: pausetls.TLSSocket, address: Any) -> None:
    """A minimal HTTP/1.1 server: the body says what the server side negotiated."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = tls.recv(4096)
        if not chunk:
            return
        request += chunk
    cert = tls.get_peer_certificate()
    body = f"{tls.version()} {tls.selected_alpn_protocol()} {cn_of(cert) if cert else '-'}\n".encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    tls.sendall(head.encode() + body)


# -- 1. openssl s_client -> TLSServer --------------------------------------------


def test_s_client_echo(
    tls_version: int, openssl: str, pki: PKI, server_cert: Issued, start_server: Any, peers: PeerGroup
) -> None:
    offers: list[list[bytes]] = []
    seen: list[tuple[str | None, str | None, bytes | None]] = []
    ctx = make_server_context(server_cert, tls_version)
    ctx.set_alpn_select_callback(alpn_select(offers))

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        seen.append((tls.version(), tls.selected_alpn_protocol(), tls.get_servername()))
        while data := tls.recv(65536):
            tls.sendall(data)

    server = start_server(ctx, handler)
    client = peers.process(s_client_argv(openssl, pki, server.server_port, tls_version, "-alpn", "h2,http/1.1"))
    client.write(b"hello from s_client\n")
    client.wait_output(b"hello from s_client\n")
    client.write(b"Q and R are data here\n")
    client.wait_output(b"Q and R are data here\n")
    client.close_stdin()
    assert client.wait() == 0, client.describe()
    assert bytes(client.stdout.data) == b"hello from s_client\nQ and R are data here\n"
    assert seen == [(VERSION_NAME[tls_version], "http/1.1", b"localhost")]
    assert offers == [[b"h2", b"http/1.1"]]
    assert server.stats.handshakes_completed == 1
    assert server.stats.handshakes_failed == 0


def test_s_client_rejects_untrusted_server(
    tls_version: int, openssl: str, other_pki: PKI, pki: PKI, server_cert: Issued, start_server: Any, peers: PeerGroup
) -> None:
    """The foreign client's verdict counts: s_client trusting another CA refuses our server."""
    server = start_server(make_server_context(server_cert, tls_version))
    client = peers.process(s_client_argv(openssl, other_pki, server.server_port, tls_version))
    client.close_stdin()
    assert client.wait() != 0
    assert "verify error" in client.stderr.text
    assert wait_for_stat(server, "handshakes_failed", 1)


def wait_for_stat(server: pausetls.TLSServer, name: str, value: int) -> bool:
    with gevent.Timeout(DEFAULT_TIMEOUT, False):
        while getattr(server.stats, name) < value:
            gevent.sleep(0.005)
    return bool(getattr(server.stats, name) == value)


# -- 2. curl -> TLSServer ----------------------------------------------------------


def curl_argv(curl: str, pki: PKI, port: int, version: int, *extra: str) -> list[str]:
    return [
        curl,
        "--silent",
        "--show-error",
        "--fail",
        "--max-time",
        str(DEFAULT_TIMEOUT),
        "--cacert",
        str(pki.ca_path),
        "--resolve",
        f"localhost:{port}:127.0.0.1",
        *CURL_FLAGS[version],
        *extra,
        f"https://localhost:{port}/",
    ]


def test_curl_https(
    tls_version: int, curl: str, pki: PKI, server_cert: Issued, start_server: Any, peers: PeerGroup
) -> None:
    offers: list[list[bytes]] = []
    ctx = make_server_context(server_cert, tls_version)
    ctx.set_alpn_select_callback(alpn_select(offers))
    server = start_server(ctx, http_handler)
    client = peers.process(curl_argv(curl, pki, server.server_port, tls_version), stdin=False)
    assert client.wait() == 0, client.describe()
    assert client.stdout.text == f"{VERSION_NAME[tls_version]} http/1.1 -\n"
    assert len(offers) == 1 and b"http/1.1" in offers[0]
    assert server.stats.handshakes_completed == 1


def test_curl_client_certificate(
    tls_version: int,
    curl: str,
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    peers: PeerGroup,
) -> None:
    verify = VerifyRecorder()
    ctx = mutual_context(pki, server_cert, tls_version, verify)
    server = start_server(ctx, http_handler)
    cert_args = ["--cert", str(client_cert.chain_path), "--key", str(client_cert.key_path)]

    client = peers.process(curl_argv(curl, pki, server.server_port, tls_version, *cert_args), stdin=False)
    assert client.wait() == 0, client.describe()
    assert client.stdout.text == f"{VERSION_NAME[tls_version]} None {client_cert.subject_cn}\n"
    verify.assert_chain(pki, client_cert.subject_cn)

    # without a certificate the server refuses the handshake (no callback runs: nothing to verify)
    refused = peers.process(curl_argv(curl, pki, server.server_port, tls_version), stdin=False)
    assert refused.wait() != 0, refused.describe()
    assert refused.stdout.text == ""
    assert wait_for_stat(server, "handshakes_failed", 1)
    assert server.stats.handshakes_completed == 1
    assert len(verify.calls) == 3


# -- 3. pausetls.connect -> openssl s_server / stdlib ssl server ---------------------


@pytest.fixture(params=["s_server", "stdlib"])
def reversing_server(
    request: pytest.FixtureRequest, tls_version: int, pki: PKI, server_cert: Issued, peers: PeerGroup
) -> int:
    """A foreign server that sends each line back reversed; its port."""
    if request.param == "s_server":
        openssl = require_binary("openssl")
        return peers.s_server(openssl, s_server_args(server_cert, pki, tls_version, "-rev")).port
    ctx = stdlib_server_context(server_cert, tls_version)
    return peers.stdlib_server(ctx, reverse_lines_handler).port


def test_connect_exchanges_data(reversing_server: int, tls_version: int, pki: PKI) -> None:
    verify = VerifyRecorder()
    ctx = pausetls_client_context(pki, tls_version, verify)
    with pausetls.connect(
        ("127.0.0.1", reversing_server), context=ctx, server_hostname="localhost", timeout=DEFAULT_TIMEOUT
    ) as tls:
        assert tls.version() == VERSION_NAME[tls_version]
        verify.assert_chain(pki, "localhost")
        for line in (b"hello peers", b"second line"):
            tls.sendall(line + b"\n")
            assert read_line(tls) == line[::-1] + b"\n"
        chain = tls.get_peer_cert_chain()
        assert chain is not None and cn_of(chain[0]) == "localhost"


def test_connect_hostname_mismatch(reversing_server: int, tls_version: int, pki: PKI) -> None:
    verify = VerifyRecorder()
    ctx = pausetls_client_context(pki, tls_version, verify)
    with pytest.raises(pausetls.VerificationError) as info:
        pausetls.connect(
            ("127.0.0.1", reversing_server), context=ctx, server_hostname="wrong.example", timeout=DEFAULT_TIMEOUT
        )
    assert "hostname mismatch" in str(info.value)
    assert info.value.verify_code == X509_V_ERR_HOSTNAME_MISMATCH
    # the callback paused, saw the mismatch on the leaf and kept OpenSSL's "no"
    assert (0, "localhost", X509_V_ERR_HOSTNAME_MISMATCH, 0) in verify.calls


def test_connect_client_certificate_to_s_server_www(
    tls_version: int, openssl: str, pki: PKI, server_cert: Issued, client_cert: Issued, peers: PeerGroup
) -> None:
    """s_server -www requires our client certificate and reports it in its status page."""
    args = s_server_args(server_cert, pki, tls_version, "-www", "-Verify", "3", "-CAfile", str(pki.ca_path))
    server = peers.s_server(openssl, [*args, "-verify_return_error"])
    verify = VerifyRecorder()
    ctx = pausetls_client_context(pki, tls_version, verify)
    ctx.use_certificate_chain_file(client_cert.chain_path)
    ctx.use_privatekey_file(client_cert.key_path)
    with pausetls.connect(
        ("127.0.0.1", server.port), context=ctx, server_hostname="localhost", timeout=DEFAULT_TIMEOUT
    ) as tls:
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        page = read_all(tls).decode()
    verify.assert_chain(pki, "localhost")
    assert page.startswith("HTTP/1.0 200 ok")
    assert f"Protocol  : {VERSION_NAME[tls_version]}" in page
    assert "Client certificate" in page
    assert f"Subject: O=pausetls tests, CN={client_cert.subject_cn}" in page
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", page, re.DOTALL)
    assert pem is not None
    assert x509.load_pem_x509_certificate(pem.group().encode()) == client_cert.cert


# -- 4. client certificate requested after the handshake -----------------------------


@pytest.mark.parametrize(
    "tls_version",
    [
        pytest.param(pausetls.TLS1_2_VERSION, id="renegotiation"),
        pytest.param(pausetls.TLS1_3_VERSION, id="post-handshake-auth"),
    ],
)
def test_request_client_certificate_s_client(
    tls_version: int,
    openssl: str,
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    peers: PeerGroup,
) -> None:
    """TLS 1.2 renegotiation / TLS 1.3 post-handshake auth, which s_client answers by itself."""
    verify = VerifyRecorder()
    requested: list[pausetls.TLSSocket] = []
    before: list[Any] = []
    ctx = make_server_context(server_cert, tls_version)
    ctx.load_verify_locations(str(pki.ca_path))

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        first = read_line(tls)
        before.append(tls.get_peer_certificate())
        tls.request_client_certificate(verify)
        requested.append(tls)
        second = read_line(tls)  # the certificate is processed (verify pauses) inside this read
        cert = tls.get_peer_certificate()
        tls.sendall(b"%s %s %s\n" % (first.strip(), second.strip(), cn_of(cert).encode() if cert else b"-"))

    def answered() -> bool:
        """The server has the client's answer: the leaf was verified, or (TLS 1.2) the renegotiation ended."""
        if any(depth == 0 for depth, *_ in verify.calls):
            return True
        return bool(requested) and tls_version == pausetls.TLS1_2_VERSION and not requested[0].renegotiate_pending()

    server = start_server(ctx, handler)
    extra = client_cert_args(client_cert, pki)
    if tls_version == pausetls.TLS1_3_VERSION:
        extra.append("-enable_pha")
    client = peers.process(s_client_argv(openssl, pki, server.server_port, tls_version, *extra))
    client.write(b"one\n")
    # s_client answers the request when it next reads the socket, which it may do after reading
    # stdin: the next line goes in only once the server has the answer, or it could overtake it
    client.wait_for(answered, "the client's answer to the certificate request", poll=0.005)
    client.write(b"two\n")
    expected = f"one two {client_cert.subject_cn}\n".encode()
    client.wait_for(lambda: client.stdout.data.endswith(b"\n"), "the server's reply")
    assert bytes(client.stdout.data) == expected
    client.close_stdin()
    assert client.wait() == 0, client.describe()
    assert before == [None]
    verify.assert_chain(pki, client_cert.subject_cn)


# -- 5. clean close vs truncation ------------------------------------------------------


def send_then_close_notify(conn: ssl.SSLSocket) -> None:
    conn.sendall(b"payload")
    conn.unwrap()  # close_notify, then wait for the client's


def send_then_fin(conn: ssl.SSLSocket) -> None:
    conn.sendall(b"payload")
    conn.shutdown(socket.SHUT_WR)  # a TCP FIN with no close_notify (stdlib drops the TLS layer here)
    while conn.recv(4096):  # wait for the client to hang up, so our close is not a RST
        pass


def connect_to(port: int, pki: PKI, tls_version: int, suppress_ragged_eofs: bool) -> pausetls.TLSSocket:
    return pausetls.connect(
        ("127.0.0.1", port),
        context=pausetls_client_context(pki, tls_version),
        server_hostname="localhost",
        timeout=DEFAULT_TIMEOUT,
        suppress_ragged_eofs=suppress_ragged_eofs,
    )


@pytest.mark.parametrize("suppress_ragged_eofs", [False, True], ids=["strict", "suppressed"])
def test_close_notify_is_clean_eof(
    tls_version: int, pki: PKI, server_cert: Issued, peers: PeerGroup, suppress_ragged_eofs: bool
) -> None:
    server = peers.stdlib_server(stdlib_server_context(server_cert, tls_version), send_then_close_notify)
    with connect_to(server.port, pki, tls_version, suppress_ragged_eofs) as tls:
        assert tls.recv(1024) == b"payload"
        assert tls.recv(1024) == b""
        assert tls.recv(1024) == b""
    server.join()


@pytest.mark.parametrize("suppress_ragged_eofs", [False, True], ids=["strict", "suppressed"])
def test_eof_without_close_notify(
    tls_version: int, pki: PKI, server_cert: Issued, peers: PeerGroup, suppress_ragged_eofs: bool
) -> None:
    server = peers.stdlib_server(stdlib_server_context(server_cert, tls_version), send_then_fin)
    with connect_to(server.port, pki, tls_version, suppress_ragged_eofs) as tls:
        assert tls.recv(1024) == b"payload"
        if suppress_ragged_eofs:
            assert tls.recv(1024) == b""
        else:
            with pytest.raises(pausetls.TruncatedStreamError, match="without close_notify"):
                tls.recv(1024)
    server.join()


# -- 6. what each side reports, compared with the stdlib ---------------------------------


def stdlib_client_session(port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost") -> dict[str, Any]:
    """Connect a blocking stdlib client (run it in a thread) and report what it negotiated."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as conn:
            report = {
                "peercert": conn.getpeercert(),
                "der": conn.getpeercert(True),
                "cipher": conn.cipher(),
                "version": conn.version(),
                "alpn": conn.selected_alpn_protocol(),
            }
            report["reply"] = read_line(conn)
    return report


def stdlib_reporting_handler(reports: list[dict[str, Any]]) -> Callable[[ssl.SSLSocket], None]:
    """A stdlib server handler recording what the server side negotiated, then a one-line reply."""

    def handle(conn: ssl.SSLSocket) -> None:
        reports.append(
            {
                "peercert": conn.getpeercert(),
                "der": conn.getpeercert(True),
                "cipher": conn.cipher(),
                "version": conn.version(),
                "alpn": conn.selected_alpn_protocol(),
            }
        )
        conn.sendall(b"ok\n")
        read_all(conn)

    return handle


def test_session_info_matches_stdlib_server(
    tls_version: int, pki: PKI, server_cert: Issued, client_cert: Issued, peers: PeerGroup
) -> None:
    """pausetls client and stdlib client, same stdlib server, client certificates on both."""
    reports: list[dict[str, Any]] = []
    server_ctx = stdlib_server_context(server_cert, tls_version, client_ca=pki.ca_path)
    server_ctx.set_alpn_protocols(["http/1.1"])
    server = peers.stdlib_server(server_ctx, stdlib_reporting_handler(reports), connections=2)

    stdlib_ctx = stdlib_client_context(pki, client_cert, tls_version)
    stdlib_ctx.set_alpn_protocols(["h2", "http/1.1"])
    reference = run_in_thread(stdlib_client_session, server.port, stdlib_ctx)

    ctx = pausetls_client_context(pki, tls_version)
    ctx.set_alpn_protos([b"h2", b"http/1.1"])
    ctx.use_certificate_chain_file(client_cert.chain_path)
    ctx.use_privatekey_file(client_cert.key_path)
    with pausetls.connect(
        ("127.0.0.1", server.port), context=ctx, server_hostname="localhost", timeout=DEFAULT_TIMEOUT
    ) as tls:
        assert read_line(tls) == b"ok\n"
        ours = {
            "peercert": tls.getpeercert(),
            "der": tls.getpeercert(True),
            "cipher": tls.cipher(),
            "version": tls.version(),
            "alpn": tls.selected_alpn_protocol(),
        }
    server.join()
    stdlib_side, pausetls_side = reports

    assert ours["der"] == reference["der"] == server_cert.cert.public_bytes(serialization.Encoding.DER)
    assert ours["peercert"] == reference["peercert"]
    # what we negotiated is what the stdlib server says it negotiated with us
    assert ours["version"] == pausetls_side["version"] == VERSION_NAME[tls_version]
    assert ours["cipher"] == pausetls_side["cipher"]
    assert ours["alpn"] == pausetls_side["alpn"] == "http/1.1"
    # and the stdlib server saw the same client certificate from both clients
    assert pausetls_side["der"] == stdlib_side["der"] == client_cert.cert.public_bytes(serialization.Encoding.DER)
    assert pausetls_side["peercert"] == stdlib_side["peercert"]
    assert pausetls_side["version"] == stdlib_side["version"] == reference["version"]


def test_session_info_matches_stdlib_client(
    tls_version: int,
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    peers: PeerGroup,
) -> None:
    """A stdlib client against TLSServer: both sides report the same session; client cert decoded like the stdlib."""
    offers: list[list[bytes]] = []
    verify = VerifyRecorder()
    reports: list[dict[str, Any]] = []
    ctx = mutual_context(pki, server_cert, tls_version, verify)
    ctx.set_alpn_select_callback(alpn_select(offers))

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        reports.append(
            {
                "peercert": tls.getpeercert(),
                "der": tls.getpeercert(True),
                "cipher": tls.cipher(),
                "version": tls.version(),
                "alpn": tls.selected_alpn_protocol(),
            }
        )
        tls.sendall(b"ok\n")
        read_all(tls)

    server = start_server(ctx, handler)
    client_ctx = stdlib_client_context(pki, client_cert, tls_version)
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    theirs = run_in_thread(stdlib_client_session, server.server_port, client_ctx)

    # the stdlib's own decoding of the same client certificate, from a stdlib server
    stdlib_reports: list[dict[str, Any]] = []
    stdlib_server = peers.stdlib_server(
        stdlib_server_context(server_cert, tls_version, client_ca=pki.ca_path), stdlib_reporting_handler(stdlib_reports)
    )
    run_in_thread(stdlib_client_session, stdlib_server.port, stdlib_client_context(pki, client_cert, tls_version))
    stdlib_server.join()

    (ours,) = reports
    assert theirs["reply"] == b"ok\n"
    assert ours["der"] == stdlib_reports[0]["der"] == client_cert.cert.public_bytes(serialization.Encoding.DER)
    assert ours["peercert"] == stdlib_reports[0]["peercert"]
    assert ours["version"] == theirs["version"] == VERSION_NAME[tls_version]
    assert ours["cipher"] == theirs["cipher"]
    assert ours["alpn"] == theirs["alpn"] == "http/1.1"
    assert offers == [[b"h2", b"http/1.1"]]
    verify.assert_chain(pki, client_cert.subject_cn)


# -- getpeercert() dict form, certificate by certificate ----------------------------------


def issue_with(pki: PKI, directory: Path, stem: str, serial: int, names: tuple[str, ...]) -> Issued:
    """A server certificate from *pki*'s intermediate with a chosen serial number and SAN entries."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pausetls tests"),
                    x509.NameAttribute(NameOID.COMMON_NAME, stem),
                ]
            )
        )
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(pki.intermediate.key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / f"{stem}.crt").write_bytes(pem)
    (directory / f"{stem}.key").write_bytes(key_pem)
    (directory / f"{stem}.chain.pem").write_bytes(pem + pki.intermediate.cert.public_bytes(serialization.Encoding.PEM))
    return Issued(cert, key, directory / f"{stem}.crt", directory / f"{stem}.key", directory / f"{stem}.chain.pem")


PEERCERT_CASES = [
    pytest.param(0x5A17_C0DE_1234, ("localhost", "127.0.0.1"), id="dns-ipv4"),
    # the stdlib writes IPv6 as eight uncompressed groups: "0:0:0:0:0:0:0:1"
    pytest.param(0x7E57_0000_0001, ("localhost", "::1"), id="ipv6-san"),
    # the stdlib writes whole bytes: "0ABCDEF01234", not "ABCDEF01234"
    pytest.param(0x0ABC_DEF0_1234, ("localhost",), id="serial-leading-zero-nibble"),
]


@pytest.mark.parametrize(("serial", "names"), PEERCERT_CASES)
def test_getpeercert_dict_matches_stdlib(
    serial: int, names: tuple[str, ...], pki: PKI, tmp_path: Path, peers: PeerGroup
) -> None:
    """Same server, same certificate: pausetls' getpeercert() is the stdlib client's, key for key."""
    cert = issue_with(pki, tmp_path, "peercert", serial, names)
    version = pausetls.TLS1_3_VERSION
    server = peers.stdlib_server(stdlib_server_context(cert, version), stdlib_reporting_handler([]), connections=2)
    reference = run_in_thread(stdlib_client_session, server.port, stdlib_client_context(pki, None, version))
    with pausetls.connect(
        ("127.0.0.1", server.port),
        context=pausetls_client_context(pki, version),
        server_hostname="localhost",
        timeout=DEFAULT_TIMEOUT,
    ) as tls:
        ours = tls.getpeercert()
        assert tls.getpeercert(True) == reference["der"]
        assert read_line(tls) == b"ok\n"
    server.join()
    assert ours == reference["peercert"]
