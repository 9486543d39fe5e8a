"""The variables Apache's mod_ssl gives a request (``HTTPS``, ``SSL_PROTOCOL``, ``SSL_CLIENT_S_DN``, ...).

Formats are mod_ssl's (httpd 2.4, ``modules/ssl/ssl_engine_vars.c``): ``SSL_SESSION_ID`` is
lower-case hex (``ap_bin2hex``), ``SSL_CLIENT_M_SERIAL`` upper-case hex of the serial's bytes
(``i2a_ASN1_INTEGER``), the DNs are ``X509_NAME_print_ex(..., XN_FLAG_RFC2253)``, and
``SSL_CLIENT_VERIFY`` is ``NONE`` (no client certificate), ``SUCCESS`` or ``FAILED:reason``
(OpenSSL's verification error, also when a verify callback accepted the chain all the same).
As with mod_ssl, the client variables are absent without a client certificate, and
``SSL_TLS_SNI`` without SNI.

They are computed once per connection: `mod_ssl_environ` keeps them with the `TLSSocket` until
the connection's session or client certificate changes (a TLS 1.2 renegotiation makes a new
``SSL_SESSION``; a TLS 1.3 post-handshake authentication puts a certificate in the same one).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ._binding import ffi, lib
from ._certs import x509_der
from .tls_socket import TLSSocket

__all__ = ["mod_ssl_environ", "serial_hex"]

# connection -> (the session and client certificate the values were read from: `_state_key`, the values)
_computed: weakref.WeakKeyDictionary[TLSSocket, tuple[tuple[int, int], Mapping[str, str]]] = weakref.WeakKeyDictionary()


def mod_ssl_environ(tls: TLSSocket) -> Mapping[str, str]:
    """mod_ssl's variables for an established connection (read-only; the same object per session)."""
    ssl = tls._live_ssl()
    key = _state_key(ssl)
    cached = _computed.get(tls)
    if cached is not None and cached[0] == key:
        return cached[1]
    values = MappingProxyType(_compute(tls, ssl))
    _computed[tls] = (key, values)
    return values


def _state_key(ssl: Any) -> tuple[int, int]:
    """The addresses of the connection's session and peer certificate.  A renegotiation makes a new
    session, and TLS 1.3 post-handshake authentication a new certificate in the same session; each new
    one is allocated while the old one is still held, so a change always shows as a new address."""
    peer = lib.SSL_get1_peer_certificate(ssl)
    if peer != ffi.NULL:
        lib.X509_free(peer)  # only its address is kept: the session still holds it
    return int(ffi.cast("uintptr_t", lib.SSL_get_session(ssl))), int(ffi.cast("uintptr_t", peer))


def _compute(tls: TLSSocket, ssl: Any) -> dict[str, str]:
    cipher = tls.cipher()
    env = {
        "HTTPS": "on",
        "SSL_PROTOCOL": tls.version() or "",
        "SSL_CIPHER": cipher[0] if cipher else "",
        "SSL_SESSION_ID": _session_id(ssl),
        "SSL_SESSION_RESUMED": "Resumed" if tls.session_reused else "Initial",
    }
    server_name = tls.get_servername()
    if server_name:
        env["SSL_TLS_SNI"] = server_name.decode("ascii", "replace")
    peer = lib.SSL_get1_peer_certificate(ssl)
    try:
        env["SSL_CLIENT_VERIFY"] = _client_verify(tls, ssl, has_certificate=peer != ffi.NULL)
        if peer != ffi.NULL:
            env.update(_client_certificate(peer))
    finally:
        if peer != ffi.NULL:
            lib.X509_free(peer)
    return env


def _session_id(ssl: Any) -> str:
    session = lib.SSL_get_session(ssl)
    if session == ffi.NULL:
        return ""
    length = ffi.new("unsigned int *")
    data = lib.SSL_SESSION_get_id(session, length)
    return bytes(ffi.buffer(data, length[0])).hex()


def _client_verify(tls: TLSSocket, ssl: Any, *, has_certificate: bool) -> str:
    result = int(lib.SSL_get_verify_result(ssl))
    if result == lib.X509_V_OK and tls.verify_error_accepted is not None:
        result = tls.verify_error_accepted  # a verify callback let a failing chain through
    if result != lib.X509_V_OK:
        reason: bytes = ffi.string(lib.X509_verify_cert_error_string(result))
        return "FAILED:" + reason.decode("ascii", "replace")
    return "SUCCESS" if has_certificate else "NONE"


def _client_certificate(peer: Any) -> dict[str, str]:
    cert = x509.load_der_x509_certificate(x509_der(peer))
    return {
        "SSL_CLIENT_S_DN": _rfc2253(peer, issuer=False),
        "SSL_CLIENT_I_DN": _rfc2253(peer, issuer=True),
        "SSL_CLIENT_M_SERIAL": serial_hex(cert.serial_number),
        "SSL_CLIENT_CERT": cert.public_bytes(Encoding.PEM).decode("ascii"),
    }


def _rfc2253(peer: Any, *, issuer: bool) -> str:
    size = 256
    while True:
        buf = ffi.new("char[]", size)
        length = lib.pausetls_x509_name_rfc2253(peer, int(issuer), buf, size)
        if length < 0:
            return ""
        if length <= size:  # X509_NAME_print_ex writes UTF-8 (RFC 2253 escapes the rest)
            return bytes(ffi.buffer(buf, length)).decode("utf-8", "replace")
        size = length


def serial_hex(serial: int) -> str:
    """A serial number as ``i2a_ASN1_INTEGER`` prints it: its bytes in upper-case hex ("00" for 0)."""
    sign, magnitude = ("-", -serial) if serial < 0 else ("", serial)
    return sign + magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "big").hex().upper()
