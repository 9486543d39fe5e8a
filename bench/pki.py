"""The benchmark's certificates: root and intermediate CA, a server and a client leaf (ECDSA P-256 or RSA-2048).

Every mode loads the same files, so every mode does the same handshake: the
server sends leaf + intermediate, a client with a certificate does the same,
and the server verifies the client's chain to the root (two signature checks).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_TYPES = ("ecdsa", "rsa")
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class BenchPKI:
    key_type: str
    ca: Path  # the root, which clients and servers trust
    server_chain: Path  # leaf + intermediate
    server_key: Path
    client_chain: Path
    client_key: Path


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    subject: str, key: PrivateKey, issuer: tuple[x509.Certificate, PrivateKey] | None, usage: str
) -> x509.Certificate:
    """*usage*: "ca", "server" or "client"."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer_name, signer_key = (name, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=usage == "ca", path_length=None), critical=True)
    )
    if usage == "server":
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif usage == "client":
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


def _pem(*items: x509.Certificate | PrivateKey) -> bytes:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
    return out


def make_pki(directory: Path, key_type: str = "ecdsa") -> BenchPKI:
    """Issue the benchmark's certificates into *directory*."""
    if key_type not in KEY_TYPES:
        raise ValueError(f"key type must be one of {KEY_TYPES}, not {key_type!r}")
    root_key, intermediate_key = _new_key(key_type), _new_key(key_type)
    root = _certificate("pausetls bench root", root_key, None, "ca")
    intermediate = _certificate("pausetls bench intermediate", intermediate_key, (root, root_key), "ca")
    files = {"ca.pem": _pem(root)}
    for role in ("server", "client"):
        key = _new_key(key_type)
        leaf = _certificate(
            f"pausetls bench {role}" if role == "client" else "localhost", key, (intermediate, intermediate_key), role
        )
        files[f"{role}.chain.pem"] = _pem(leaf, intermediate)
        files[f"{role}.key"] = _pem(key)
    for filename, data in files.items():
        (directory / filename).write_bytes(data)
    return BenchPKI(
        key_type,
        directory / "ca.pem",
        directory / "server.chain.pem",
        directory / "server.key",
        directory / "client.chain.pem",
        directory / "client.key",
    )
