"""A throwaway self-signed certificate for ``pausetls serve`` without ``--cert``/``--key``."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["SELF_SIGNED_NAMES", "self_signed_files"]

SELF_SIGNED_NAMES = ("localhost", "127.0.0.1", "::1")
SELF_SIGNED_DAYS = 7


def self_signed_files(cleanup: contextlib.ExitStack) -> tuple[Path, Path]:
    """Write a new self-signed certificate and key into a temporary directory removed by *cleanup*."""
    directory = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="pausetls-")))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed_certificate(key)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    print(
        f"pausetls: no --cert/--key given: using a throwaway self-signed certificate for "
        f"{', '.join(SELF_SIGNED_NAMES)}, valid {SELF_SIGNED_DAYS} days (SHA-256 fingerprint {fingerprint})",
        flush=True,
    )
    return cert_path, key_path


def _self_signed_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SELF_SIGNED_NAMES[0])])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(_general_names(SELF_SIGNED_NAMES)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _general_names(names: Iterable[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def _write_private(path: Path, data: bytes) -> None:
    """Write *data* to a new file only its owner can read."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(data)
