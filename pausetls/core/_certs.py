"""Certificates and keys crossing between Python objects and this binding's OpenSSL.

Objects never cross between two OpenSSL copies: everything goes through DER.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import crypto

from ._binding import drain_error_queue, ffi, lib
from .errors import Error

CertificateLike = crypto.X509 | x509.Certificate | bytes
PrivateKeyLike = crypto.PKey | PrivateKeyTypes | bytes


def x509_der(ptr: Any) -> bytes:
    """DER bytes of an ``X509 *`` owned by OpenSSL."""
    out = ffi.new("unsigned char **")
    length = lib.i2d_X509(ptr, out)
    if length <= 0:
        raise Error("i2d_X509 failed")
    try:
        return bytes(ffi.buffer(out[0], length))
    finally:
        lib.OPENSSL_free(out[0])


class _LazyX509(crypto.X509):
    """A pyOpenSSL ``X509`` that decodes its DER on first use.

    A verify callback runs once per certificate of the chain, and decoding each
    one into pyOpenSSL's OpenSSL costs about 80 µs (a quarter of a client-cert
    handshake's server CPU, three certificates deep): a callback that only
    looks at the leaf, or only at ``ok``, should not pay for the others.
    """

    def __init__(self, der: bytes) -> None:  # not X509.__init__: that allocates an empty certificate
        self._der = der

    def __getattr__(self, name: str) -> Any:
        # Reached only for attributes not set yet: pyOpenSSL's own (``_x509`` and whatever else its
        # constructor sets in this version), so the first use decodes and copies them all in.
        state = self.__dict__
        if "_der" not in state or "_decoded" in state or name.startswith("__"):
            raise AttributeError(name)
        state["_decoded"] = True
        for key, value in vars(crypto.load_certificate(crypto.FILETYPE_ASN1, state["_der"])).items():
            state.setdefault(key, value)
        try:
            return state[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_cryptography(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self._der)


def x509_to_pyopenssl(ptr: Any) -> crypto.X509:
    """A pyOpenSSL ``X509`` copy of an ``X509 *`` owned by OpenSSL (decoded when first used)."""
    return _LazyX509(x509_der(ptr))


def certificate_der(cert: CertificateLike) -> bytes:
    if isinstance(cert, bytes):
        return cert
    if isinstance(cert, crypto.X509):
        cert = cert.to_cryptography()
    return cert.public_bytes(serialization.Encoding.DER)


def private_key_der(key: PrivateKeyLike) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, crypto.PKey):
        key = key.to_cryptography_key()  # type: ignore[assignment]
    return key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_x509(cert: CertificateLike) -> Any:
    """A new ``X509 *`` (caller frees it) from any certificate form."""
    return _decode(lib.d2i_X509, certificate_der(cert), "certificate")


def new_pkey(key: PrivateKeyLike) -> Any:
    """A new ``EVP_PKEY *`` (caller frees it) from any private-key form."""
    return _decode(lib.d2i_AutoPrivateKey, private_key_der(key), "private key")


def use_x509(cert: CertificateLike, use: Callable[[Any], int], what: str) -> None:
    """Hand a fresh ``X509 *`` to an OpenSSL setter that takes its own reference, then drop ours."""
    _use(new_x509(cert), use, lib.X509_free, what)


def use_pkey(key: PrivateKeyLike, use: Callable[[Any], int], what: str) -> None:
    """The same for an ``EVP_PKEY *``."""
    _use(new_pkey(key), use, lib.EVP_PKEY_free, what)


def _use(ptr: Any, use: Callable[[Any], int], free: Callable[[Any], None], what: str) -> None:
    try:
        if use(ptr) <= 0:
            raise Error(what, drain_error_queue())
    finally:
        free(ptr)


def _decode(d2i: Any, der: bytes, what: str) -> Any:
    ptr = d2i(ffi.NULL, ffi.new("const unsigned char **", ffi.from_buffer(der)), len(der))
    if ptr == ffi.NULL:
        raise Error(f"not a valid DER {what}")
    return ptr


def _name_tuple(name: x509.Name) -> tuple[tuple[tuple[str, str], ...], ...]:
    return tuple(
        tuple((getattr(attr.oid, "_name", None) or attr.oid.dotted_string, str(attr.value)) for attr in rdn)
        for rdn in name.rdns
    )


_GENERAL_NAME_KINDS: dict[type, str] = {
    x509.DNSName: "DNS",
    x509.IPAddress: "IP Address",
    x509.RFC822Name: "email",
    x509.UniformResourceIdentifier: "URI",
}


def _asn1_time(value: Any) -> str:
    return f"{value:%b} {value.day:2d} {value:%H:%M:%S %Y} GMT"


def peercert_dict(der: bytes) -> dict[str, Any]:
    """The decoded form `ssl.SSLSocket.getpeercert()` returns, from DER."""
    cert = x509.load_der_x509_certificate(der)
    decoded: dict[str, Any] = {
        "subject": _name_tuple(cert.subject),
        "issuer": _name_tuple(cert.issuer),
        "version": cert.version.value + 1,
        "serialNumber": _serial_hex(cert.serial_number),
        "notBefore": _asn1_time(cert.not_valid_before_utc),
        "notAfter": _asn1_time(cert.not_valid_after_utc),
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return decoded
    decoded["subjectAltName"] = tuple(
        (_GENERAL_NAME_KINDS.get(type(name), "othername"), _san_value(name)) for name in san
    )
    return decoded


def _san_value(name: x509.GeneralName) -> str:
    """The text CPython's ssl module gives: IPv6 as eight uncompressed upper-case groups."""
    if isinstance(name, x509.IPAddress) and isinstance(name.value, ipaddress.IPv6Address):
        packed = name.value.packed
        return ":".join(f"{int.from_bytes(packed[i : i + 2], 'big'):X}" for i in range(0, 16, 2))
    return str(name.value)


def _serial_hex(serial: int) -> str:
    """Upper-case hex in whole bytes, as OpenSSL's i2a_ASN1_INTEGER writes it."""
    digits = f"{serial:X}"
    return digits if len(digits) % 2 == 0 else "0" + digits
