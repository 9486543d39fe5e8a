"""Certificates handed to callbacks: pyOpenSSL ``X509`` objects, decoded only when a callback uses them."""

from __future__ import annotations

import warnings
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import crypto

import pausetls

from conftest import stdlib_client_context
from pki import PKI, Issued
from reliability import mutual_context, ping


def test_verify_callback_certificates_are_pyopenssl_x509_decoded_on_first_use(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any
) -> None:
    seen: dict[int, crypto.X509] = {}

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        seen[depth] = x509
        return bool(ok)

    server = start_server(mutual_context(pki, server_cert, None, verify))
    assert ping(server.server_port, stdlib_client_context(pki, client_cert, cooperative=True)) == b"ping"
    assert sorted(seen) == [0, 1, 2]
    assert all(isinstance(cert, crypto.X509) for cert in seen.values())
    root = seen[2]
    assert "_x509" not in vars(root)  # nobody looked at it: never decoded
    leaf = seen[0]
    assert leaf.to_cryptography() == client_cert.cert
    der = client_cert.cert.public_bytes(serialization.Encoding.DER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyOpenSSL deprecates its own X509 accessors
        assert crypto.dump_certificate(crypto.FILETYPE_ASN1, leaf) == der
        assert leaf.get_subject().CN == "client one"
        assert (
            leaf.digest("sha256").replace(b":", b"").lower()
            == client_cert.cert.fingerprint(hashes.SHA256()).hex().encode()
        )
    assert root.to_cryptography() == pki.root.cert
