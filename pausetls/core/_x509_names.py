"""X.509 names (the CA names of a CertificateRequest) crossing between Python objects and this binding's OpenSSL.

As for certificates (`_certs`), nothing crosses between two OpenSSL copies: names go through DER.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cryptography import x509
from OpenSSL import crypto
from OpenSSL._util import ffi as pyopenssl_ffi
from OpenSSL._util import lib as pyopenssl_lib

from ._binding import ffi, lib
from .errors import Error

NameLike = crypto.X509Name | x509.Name | bytes
"""A distinguished name: pyOpenSSL ``X509Name``, cryptography ``Name`` or its DER."""


def name_der(name: NameLike) -> bytes:
    if isinstance(name, bytes):
        return name
    if isinstance(name, crypto.X509Name):
        return name.der()
    if isinstance(name, x509.Name):
        return name.public_bytes()
    raise TypeError(f"a CA name must be an X509Name, a cryptography Name or DER bytes, not {type(name).__name__}")


def new_name_stack(names: Iterable[NameLike]) -> Any:
    """A new ``STACK_OF(X509_NAME) *`` holding *names*; the caller owns it (or hands it to OpenSSL)."""
    stack = lib.sk_X509_NAME_new_null()
    if stack == ffi.NULL:
        raise MemoryError("sk_X509_NAME_new_null failed")
    try:
        for name in names:
            der = name_der(name)
            ptr = lib.d2i_X509_NAME(ffi.NULL, ffi.new("const unsigned char **", ffi.from_buffer(der)), len(der))
            if ptr == ffi.NULL:
                raise Error("not a valid DER distinguished name")
            if lib.sk_X509_NAME_push(stack, ptr) <= 0:
                lib.X509_NAME_free(ptr)
                raise MemoryError("sk_X509_NAME_push failed")
    except BaseException:
        lib.pausetls_x509_name_stack_free(stack)
        raise
    return stack


def names_of_stack(stack: Any) -> list[bytes]:
    """The DER of each name in a ``STACK_OF(X509_NAME) *`` OpenSSL owns (NULL: none)."""
    if stack == ffi.NULL:
        return []
    return [_x509_name_der(lib.sk_X509_NAME_value(stack, i)) for i in range(lib.sk_X509_NAME_num(stack))]


def pyopenssl_name(der: bytes) -> crypto.X509Name:
    """A pyOpenSSL ``X509Name`` decoded from DER into pyOpenSSL's own OpenSSL (it has no public constructor
    from DER; ``X509Name.__init__`` only copies another one)."""
    ptr = pyopenssl_lib.d2i_X509_NAME(
        pyopenssl_ffi.NULL, pyopenssl_ffi.new("const unsigned char **", pyopenssl_ffi.from_buffer(der)), len(der)
    )
    if ptr == pyopenssl_ffi.NULL:
        raise Error("not a valid DER distinguished name")
    name = object.__new__(crypto.X509Name)  # what pyOpenSSL's own get_client_ca_list does: no deprecation warning
    name._name = pyopenssl_ffi.gc(ptr, pyopenssl_lib.X509_NAME_free)
    return name


def _x509_name_der(ptr: Any) -> bytes:
    out = ffi.new("unsigned char **")
    length = lib.i2d_X509_NAME(ptr, out)
    if length <= 0:
        raise Error("i2d_X509_NAME failed")
    try:
        return bytes(ffi.buffer(out[0], length))
    finally:
        lib.OPENSSL_free(out[0])
