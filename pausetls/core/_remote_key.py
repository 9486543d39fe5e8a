"""Remote private keys: a context holds its certificate, and a signer elsewhere holds the key.

The key is an ``EVP_PKEY`` of pausetls's in-process OpenSSL provider (``_remote_key.c``): it carries
the certificate's public key and the id of a `RemoteSigner`.  When libssl signs a handshake
(CertificateVerify, the TLS 1.2 ServerKeyExchange) the provider hashes the signed data and calls
``pausetls_remote_sign`` (in ``_callbacks``) with the TLS signature scheme and the digest, inside
the connection's job: the user's ``sign`` may pause there like every other hook.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._binding import drain_error_queue, ffi, lib
from .errors import Error

if TYPE_CHECKING:
    from .tls_socket import TLSSocket

__all__ = ["KEY_TYPES", "RemoteKeys", "RemoteSigner", "SignCallback", "disable_static_rsa", "signer_of"]

SignCallback = Callable[["TLSSocket", str, bytes], Any]
"""``sign(conn, scheme, digest) -> signature``: DER for ECDSA, the raw block for RSA; may block on the
loop or return a pending result (an ``async def`` under asyncio).  The schemes (TLS SignatureScheme
names, RFC 8446 4.2.3) are ``ecdsa_secp256r1_sha256``, ``ecdsa_secp384r1_sha384``,
``ecdsa_secp521r1_sha512`` (the hash, not the key's curve, under TLS 1.2), ``rsa_pss_rsae_sha256/384/512``
and, under TLS 1.2 only, ``rsa_pkcs1_sha256/384/512``: ``rk_scheme`` in ``_remote_key.c``."""


class RemoteSigner:
    """The ``sign`` callback of one remote key, found again by the id the key carries."""

    __slots__ = ("__weakref__", "id", "sign")

    def __init__(self, sign: SignCallback) -> None:
        self.sign = sign
        self.id = next(_ids)
        _signers[self.id] = self


_ids = itertools.count(1)  # 0 is the provider's "no signer": a certificate's public key
_signers: weakref.WeakValueDictionary[int, RemoteSigner] = weakref.WeakValueDictionary()
"""Weak: a signer lives while its Context holds its key (`RemoteKeys`); a connection made before
the key was replaced holds the old key, whose signer is then gone (its handshake fails closed)."""


def signer_of(signer_id: int) -> RemoteSigner | None:
    return _signers.get(signer_id)


KEY_TYPES = ("RSA", "EC")
"""The key types a remote key may have: libssl holds one private key per certificate type."""


class RemoteKeys:
    """The signers of one ``SSL_CTX``'s remote keys, one per key type.

    A signer is kept while its key is in the context: a local key, another remote key or a
    certificate the key does not match takes its place, and `refresh` lets the signer go.
    """

    __slots__ = ("_ctx", "_signers")

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._signers: dict[str, RemoteSigner] = {}

    def install(self, sign: SignCallback) -> None:
        """Make ``sign`` the private key of the context's current certificate, which must be set already."""
        if not callable(sign):
            raise TypeError("sign must be callable")
        cert = lib.SSL_CTX_get0_certificate(self._ctx)
        if cert == ffi.NULL:
            raise Error("set the certificate before use_remote_private_key: the key's public half comes from it")
        signer = RemoteSigner(sign)  # only weakly registered: alive here until refresh keeps it
        lib.ERR_clear_error()
        key = lib.pausetls_remote_key_new(lib.X509_get0_pubkey(cert), signer.id)
        if key == ffi.NULL:
            raise Error("cannot make a remote key for this certificate (EC and RSA keys only)", drain_error_queue())
        try:
            if lib.SSL_CTX_use_PrivateKey(self._ctx, key) <= 0:
                raise Error("cannot use the remote key", drain_error_queue())
        finally:
            lib.EVP_PKEY_free(key)  # the SSL_CTX holds its own reference
        self.refresh()

    def refresh(self) -> None:
        """Keep the signers of the remote keys the context holds now, and only those."""
        held = {}
        for key_type in KEY_TYPES:
            signer = signer_of(_signer_id(self._ctx, key_type))
            if signer is not None:
                held[key_type] = signer
        self._signers = held

    @property
    def rsa_is_remote(self) -> bool:
        """A remote RSA key cannot decrypt a premaster secret: static RSA must go while this holds."""
        return "RSA" in self._signers


def _signer_id(ctx: Any, key_type: str) -> int:
    signer = ffi.new("size_t *")
    if not lib.pausetls_remote_signer_for(ctx, key_type.encode("ascii"), signer):
        raise Error("cannot read the context's keys", drain_error_queue())
    return int(signer[0])


def disable_static_rsa(ctx: Any) -> None:
    if lib.pausetls_disable_static_rsa(ctx) <= 0:
        raise Error("no TLS 1.2 cipher left without static RSA key exchange", drain_error_queue())
