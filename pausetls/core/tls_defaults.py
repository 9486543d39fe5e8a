"""The protocol settings every new Context starts with: versions, TLS 1.2 cipher list, key exchange groups.

Servers (``TLS_SERVER_METHOD``, and ``TLS_METHOD``, which may serve) get Mozilla's "intermediate"
profile (version 5.7, https://ssl-config.mozilla.org/): TLS >= 1.2, ECDHE/DHE key exchange with
AEAD ciphers only (no static RSA key exchange, no CBC), curves X25519, P-256 and P-384. The DHE
suites are negotiated only once `Context.load_tmp_dh` gave DH parameters: OpenSSL 3 has none by default.
TLS 1.3 suites stay OpenSSL's (AES-GCM and ChaCha20-Poly1305, the same three Mozilla lists).

Clients (``TLS_CLIENT_METHOD``) get CPython's ``ssl`` defaults (3.10+): TLS >= 1.2 and
``PY_SSL_DEFAULT_CIPHER_STRING``, which still reaches servers that only offer ECDHE with CBC-SHA2.

`Context.set_cipher_list`, ``set_ciphersuites``, ``set_min_proto_version`` and ``set_groups``
override any of these.
"""

from __future__ import annotations

from typing import Any

from ._binding import drain_error_queue, lib
from .constants import TLS1_2_VERSION, TLS_CLIENT_METHOD
from .errors import Error

__all__ = ["SERVER_CIPHERS", "CLIENT_CIPHERS", "SERVER_GROUPS", "MIN_VERSION", "apply_defaults", "default_ciphers"]

SERVER_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)
"""Mozilla intermediate's TLS 1.2 list, in its order."""

CLIENT_CIPHERS = "@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"
"""CPython's default cipher string (``Modules/_ssl.c``, 3.10 and later)."""

SERVER_GROUPS = "X25519:P-256:P-384"
"""Mozilla intermediate's curves (OpenSSL's default adds X448 and P-521, which the profile rejects)."""

MIN_VERSION = TLS1_2_VERSION


def default_ciphers(method: int) -> str:
    """The TLS 1.2 cipher list a new context made with *method* starts with."""
    return CLIENT_CIPHERS if method == TLS_CLIENT_METHOD else SERVER_CIPHERS


def apply_defaults(ctx: Any, method: int) -> None:
    """Give a new ``SSL_CTX *`` made with *method* the settings above."""
    _check(lib.SSL_CTX_set_min_proto_version(ctx, MIN_VERSION), "minimum protocol version")
    _check(lib.SSL_CTX_set_cipher_list(ctx, default_ciphers(method).encode()), "cipher list")
    if method != TLS_CLIENT_METHOD:
        _check(lib.SSL_CTX_set1_groups_list(ctx, SERVER_GROUPS.encode()), "groups")


def _check(ok: int, what: str) -> None:
    if ok <= 0:  # only an OpenSSL built without these algorithms gets here
        raise Error(f"cannot set the default {what}", drain_error_queue())
