"""The CA names a server puts in its certificate request, as ``openssl s_client`` and CPython's ``ssl`` see them.

Without them a client holding several certificates cannot choose one (s_server and nginx send
them).  The names only guide the client: which certificates are accepted does not change.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import gevent
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto

import pausetls

from conftest import make_server_context, stdlib_client_context, wait_until
from peers import DEFAULT_TIMEOUT, PeerGroup
from pki import PKI, Issued

S_FLAG = {pausetls.TLS1_2_VERSION: "-tls1_2", pausetls.TLS1_3_VERSION: "-tls1_3"}


def s_client_ca_names(openssl: str, peers: PeerGroup, port: int, version: int) -> list[str]:
    """The "Acceptable client certificate CA names" s_client printed (one ``O = ..., CN = ...`` each)."""
    client = peers.process(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", S_FLAG[version]]
    )
    client.close_stdin()  # not -quiet: s_client prints the handshake summary, then ends on stdin's EOF
    client.wait()
    output = client.stdout.text
    if "No client certificate CA names sent" in output:
        return []
    match = re.search(r"^Acceptable client certificate CA names\n((?:.+\n)*?)(?=^[A-Z][^=]*:|^---)", output, re.M)
    assert match is not None, client.describe()
    return match.group(1).splitlines()


def printed(cert: Issued) -> str:
    """How s_client prints the subject of *cert* (every test PKI name is O then CN)."""
    cn = cert.subject_cn
    return f"O = pausetls tests, CN = {cn}"


def client_ca_server(
    server_cert: Issued, version: int, start_server: Any, *, cafile: Path | None, mode: int = pausetls.VERIFY_PEER
) -> tuple[pausetls.Context, Any, list[list[x509.Name]]]:
    """A TLSServer asking for client certificates; its handler records `get_client_ca_list` as it saw it."""
    ctx = make_server_context(server_cert, version)
    if cafile is not None:
        ctx.load_verify_locations(str(cafile))
    ctx.set_verify(mode)
    seen: list[list[x509.Name]] = []

    def handler(tls: pausetls.TLSSocket, address: Any) -> None:
        seen.append(tls.get_client_ca_list(as_cryptography=True))

    return ctx, start_server(ctx, handler), seen


def bundle(path: Path, *certs: Issued) -> Path:
    path.write_bytes(b"".join(c.cert.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def test_a_server_names_the_cas_of_its_cafile(
    tls_version: int,
    openssl: str,
    pki: PKI,
    other_pki: PKI,
    server_cert: Issued,
    start_server: Any,
    peers: PeerGroup,
    tmp_path: Path,
) -> None:
    cafile = bundle(tmp_path / "cas.pem", pki.root, other_pki.root)
    _, server, seen = client_ca_server(server_cert, tls_version, start_server, cafile=cafile)
    names = s_client_ca_names(openssl, peers, server.server_port, tls_version)
    assert names == [printed(pki.root), printed(other_pki.root)]
    assert wait_until(lambda: len(seen) == 1)
    assert seen == [[pki.root.cert.subject, other_pki.root.cert.subject]]


def test_loading_more_cas_adds_their_names_once(
    openssl: str, pki: PKI, other_pki: PKI, server_cert: Issued, start_server: Any, peers: PeerGroup
) -> None:
    ctx, server, _ = client_ca_server(server_cert, pausetls.TLS1_3_VERSION, start_server, cafile=pki.ca_path)
    ctx.load_verify_locations(str(other_pki.ca_path))
    ctx.load_verify_locations(str(pki.ca_path))  # already named: not twice
    names = s_client_ca_names(openssl, peers, server.server_port, pausetls.TLS1_3_VERSION)
    assert names == [printed(pki.root), printed(other_pki.root)]


def name_forms(cert: Issued) -> list[Any]:
    subject = cert.cert.subject
    return [crypto.X509.from_cryptography(cert.cert).get_subject(), subject, subject.public_bytes()]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pyOpenSSL deprecates X509Name, which it still takes
@pytest.mark.parametrize("form", ["X509Name", "cryptography-Name", "DER"])
def test_set_client_ca_list_replaces_the_names_and_add_client_ca_extends_them(
    form: str,
    tls_version: int,
    openssl: str,
    pki: PKI,
    other_pki: PKI,
    server_cert: Issued,
    start_server: Any,
    peers: PeerGroup,
) -> None:
    ctx, server, _ = client_ca_server(server_cert, tls_version, start_server, cafile=pki.ca_path)
    index = ["X509Name", "cryptography-Name", "DER"].index(form)
    ctx.set_client_ca_list([name_forms(other_pki.root)[index]])
    assert s_client_ca_names(openssl, peers, server.server_port, tls_version) == [printed(other_pki.root)]

    ctx.load_verify_locations(str(pki.ca_path))  # the list was chosen: loading no longer adds to it
    ctx.add_client_ca(pki.intermediate.cert)
    assert s_client_ca_names(openssl, peers, server.server_port, tls_version) == [
        printed(other_pki.root),
        printed(pki.intermediate),
    ]

    ctx.set_client_ca_list([])
    assert s_client_ca_names(openssl, peers, server.server_port, tls_version) == []


def test_add_client_ca_takes_every_certificate_form(pki: PKI, server_cert: Issued) -> None:
    ctx = make_server_context(server_cert)
    ctx.add_client_ca(crypto.X509.from_cryptography(pki.root.cert))
    ctx.add_client_ca(pki.intermediate.cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(pausetls.Error):
        ctx.add_client_ca(b"not a certificate")
    with pytest.raises(TypeError):
        ctx.set_client_ca_list(["CN=not a name"])  # type: ignore[list-item]
    with pytest.raises(pausetls.Error):
        ctx.set_client_ca_list([b"\x30\x03garbage"])


def test_the_names_do_not_change_which_clients_are_accepted(
    tls_version: int,
    pki: PKI,
    other_pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    untrusted_client_cert: Issued,
    start_server: Any,
) -> None:
    """Naming an untrusted CA does not make it trusted, nor does leaving the trusted one out refuse it."""
    ctx, server, seen = client_ca_server(
        server_cert,
        tls_version,
        start_server,
        cafile=pki.ca_path,
        mode=pausetls.VERIFY_PEER | pausetls.VERIFY_FAIL_IF_NO_PEER_CERT,
    )
    ctx.set_client_ca_list([other_pki.root.cert.subject])

    def handshake(client: Issued) -> None:
        context = stdlib_client_context(pki, client, tls_version, cooperative=True)
        with gevent.socket.create_connection(("127.0.0.1", server.server_port), timeout=DEFAULT_TIMEOUT) as sock:
            with context.wrap_socket(sock, server_hostname="localhost") as tls:
                tls.sendall(b"x")
                tls.recv(1)  # TLS 1.3: the server's verdict on the client certificate arrives after the handshake

    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(untrusted_client_cert)
    handshake(client_cert)
    assert wait_until(lambda: len(seen) == 1)
    assert server.stats.handshakes_completed == 1
    assert server.stats.handshakes_failed == 1


def test_a_client_sees_the_names_the_server_asked_for(
    tls_version: int, openssl: str, pki: PKI, server_cert: Issued, client_cert: Issued, peers: PeerGroup
) -> None:
    """s_server names the CAs of its -CAfile; a pausetls client reads them with get_client_ca_list."""
    args = [
        "-cert",
        str(server_cert.cert_path),
        "-key",
        str(server_cert.key_path),
        "-cert_chain",
        str(pki.intermediate.cert_path),
        S_FLAG[tls_version],
        "-www",
        "-verify",
        "3",
        "-CAfile",
        str(pki.ca_path),
    ]
    server = peers.s_server(openssl, args)
    ctx = pausetls.client_context(str(pki.ca_path))
    ctx.use_certificate_chain_file(client_cert.chain_path)
    ctx.use_privatekey_file(client_cert.key_path)

    with pausetls.connect(("127.0.0.1", server.port), ctx, server_hostname="localhost", timeout=DEFAULT_TIMEOUT) as tls:
        names, pyopenssl_names = tls.get_client_ca_list(as_cryptography=True), tls.get_client_ca_list()
    assert names == [pki.root.cert.subject]
    assert [name.der() for name in pyopenssl_names] == [pki.root.cert.subject.public_bytes()]
