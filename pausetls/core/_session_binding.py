"""Which sessions may resume where: the session id context digest and the checks on a resumed handshake.

OpenSSL only compares a session's id context, and does it before the SNI
callback can switch contexts (``ssl_get_prev_session`` for TLS 1.2,
the PSK extension for TLS 1.3).  It never verifies a resumed peer again and,
under TLS 1.2, lets a session made for one server name resume for another.
So pausetls:

* gives every Context a default session id context that digests what decides
  who may resume: verify mode and depth, the trusted client CAs, and on request
  the Context's own identity (`policy_session_id`);
* stamps a new session with the id context of the context it was made on
  after SNI (`settle_session`), and refuses a resumption whose session was made
  under another id context, for another server name, or whose peer certificate
  the trust store in force now rejects (`settle_session`, run from the
  always-installed servername hook: inside the handshake, before the handler).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from ._binding import ffi, lib
from ._certs import x509_der
from .errors import Alert, VerificationError

if TYPE_CHECKING:
    from .tls_socket import TLSSocket

__all__ = [
    "policy_session_id",
    "refusal_alert",
    "requested_server_name",
    "same_server_name",
    "session_id_context",
    "settle_session",
]

_SNI_EXTENSION = 0
_UNKNOWN_ISSUER = {
    lib.X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
    lib.X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
    lib.X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
    lib.X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
}


def policy_session_id(ctx: Any, prefix: bytes, lazy_sources: list[bytes], nonce: bytes) -> bytes:
    """A 32-byte session id context for the ``SSL_CTX *`` *ctx*: SHA-256 of its client policy.

    *lazy_sources* name trust sources whose certificates OpenSSL loads only on
    demand (``capath`` directories, the default paths); *nonce* is empty, or
    the Context's own random identity.
    """
    digest = hashlib.sha256(prefix)
    digest.update(b"verify=%d;depth=%d;" % (lib.SSL_CTX_get_verify_mode(ctx), lib.SSL_CTX_get_verify_depth(ctx)))
    for trusted in sorted(_trusted_certificates(ctx)):
        digest.update(b"ca=" + trusted)
    for source in lazy_sources:
        digest.update(b"source=%d:" % len(source) + source)
    digest.update(b"nonce=" + nonce)
    return digest.digest()


def _trusted_certificates(ctx: Any) -> list[bytes]:
    """SHA-256 of each certificate in the context's X509_STORE."""
    objects = lib.X509_STORE_get0_objects(lib.SSL_CTX_get_cert_store(ctx))
    found = []
    for i in range(0 if objects == ffi.NULL else lib.sk_X509_OBJECT_num(objects)):
        cert = lib.X509_OBJECT_get0_X509(lib.sk_X509_OBJECT_value(objects, i))
        if cert != ffi.NULL:  # CRLs are NULL here
            found.append(hashlib.sha256(x509_der(cert)).digest())
    return found


def requested_server_name(ssl: Any) -> str | None:
    """The SNI name of the ClientHello OpenSSL is processing (only inside the client hello callback).

    Under TLS 1.2 ``SSL_get_servername`` answers the *session's* name on a
    resumption, so the requested one is read here, before the session is chosen.
    """
    data, length = ffi.new("const unsigned char **"), ffi.new("size_t *")
    if not lib.SSL_client_hello_get0_ext(ssl, _SNI_EXTENSION, data, length):
        return None
    ext = bytes(ffi.buffer(data[0], length[0]))
    # ServerNameList: u16 length, then entries of u8 type (0: host_name), u16 length, name (RFC 6066)
    if len(ext) < 5 or ext[2] != 0:
        return ""  # sent, but not a host name: matches no session's name
    return ext[5 : 5 + int.from_bytes(ext[3:5], "big")].decode("ascii", "replace")


def same_server_name(session: Any, requested: str | None) -> bool:
    """Was *session* made for the name the client asks for now (or both for none)?"""
    stored = lib.SSL_SESSION_get0_hostname(session)
    name = "" if stored == ffi.NULL else ffi.string(stored).decode("ascii", "replace")
    return name.lower() == (requested or "").lower()  # DNS names compare without case


def session_id_context(session: Any) -> bytes:
    length = ffi.new("unsigned int *")
    sid_ctx = lib.SSL_SESSION_get0_id_context(session, length)
    return bytes(ffi.buffer(sid_ctx, length[0]))


def settle_session(conn: TLSSocket) -> Exception | None:
    """After SNI: bind a new session to the final context, or say why a resumed one must not be used.

    Returns None to go on, or the exception the handshake fails with (an
    `Alert`, or a `VerificationError` from verifying the resumed peer again).
    """
    ssl = conn._ssl
    session = lib.SSL_get_session(ssl)
    if session == ffi.NULL or not lib.SSL_is_server(ssl):
        # OpenSSL runs the servername callback on a client too (the server's answer): the binding is server
        # policy, and verifying a server again under the ssl_client purpose would refuse every resumption
        return None
    policy = conn.get_context().get_session_id()
    if not lib.SSL_session_reused(ssl):
        # made before SNI, the session carries the first context's id: give it the final one's
        if session_id_context(session) != policy and not lib.SSL_SESSION_set1_id_context(session, policy, len(policy)):
            return Alert(lib.SSL_AD_INTERNAL_ERROR, "cannot bind the new session to its context")
        return None
    if session_id_context(session) != policy:
        return Alert(
            lib.SSL_AD_HANDSHAKE_FAILURE,
            "resumed session was made under another session id context (client policy) than the one chosen by SNI",
        )
    if not same_server_name(session, conn.requested_server_name):
        return Alert(lib.SSL_AD_UNRECOGNIZED_NAME, "resumed session was made for another server name")
    return _verify_peer_again(conn)


def _verify_peer_again(conn: TLSSocket) -> VerificationError | None:
    """Verify the resumed peer's certificate against the trust store in force now; the verify callback
    sees the real ``ok`` and error of each depth, as in a full handshake.  Fails closed."""
    ssl = conn._ssl
    mode = lib.SSL_get_verify_mode(ssl)
    if not mode & lib.SSL_VERIFY_PEER:
        return None
    cert = lib.SSL_get1_peer_certificate(ssl)
    if cert == ffi.NULL:
        if mode & lib.SSL_VERIFY_FAIL_IF_NO_PEER_CERT:
            return _verification_error(lib.X509_V_ERR_UNSPECIFIED, "resumed session has no client certificate")
        return None
    lib.X509_free(cert)
    result = lib.pausetls_verify_peer_again(ssl, lib.pausetls_verify_cb)
    return None if result == lib.X509_V_OK else _verification_error(result, "resumed session")


def _verification_error(code: int, what: str) -> VerificationError:
    text = ffi.string(lib.X509_verify_cert_error_string(code)).decode()
    return VerificationError(f"handshake failed: {what}", [], code, text)


def refusal_alert(refusal: Exception) -> int:
    """The TLS alert that tells the client why its resumption was refused."""
    if isinstance(refusal, Alert):
        return refusal.description
    code = getattr(refusal, "verify_code", None)
    if code == lib.X509_V_ERR_APPLICATION_VERIFICATION:
        return int(lib.SSL_AD_HANDSHAKE_FAILURE)  # what OpenSSL sends for it in a full handshake
    return int(lib.SSL_AD_UNKNOWN_CA if code in _UNKNOWN_ISSUER else lib.SSL_AD_BAD_CERTIFICATE)
