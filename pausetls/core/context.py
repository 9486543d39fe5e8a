"""`Context`: an ``SSL_CTX`` with pyOpenSSL's method names and callback signatures."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from OpenSSL import crypto

from ..sessions.cache import CallbackBackend, SessionCache, StoreBackend
from ..sessions.sealing import SessionSealer
from ..sessions.tickets import TicketKeyRing
from . import _live
from ._binding import drain_error_queue, ffi, lib
from ._certs import CertificateLike, PrivateKeyLike, new_x509, use_pkey, use_x509
from ._files import checked_file
from ._hooks import ContextHooks
from ._keylog import KeyLogCallback, KeyLogFile
from ._remote_key import RemoteKeys, SignCallback, disable_static_rsa
from ._session_binding import policy_session_id
from ._x509_names import NameLike, names_of_stack, new_name_stack
from .client_session_cache import ClientSessionCache
from .constants import FILETYPE_PEM, TLS_CLIENT_METHOD, TLS_METHOD, TLS_SERVER_METHOD
from .errors import Error
from .tls_defaults import apply_defaults, default_ciphers

if TYPE_CHECKING:
    from ..sessions.stores import SessionStore
    from ._driver import Driver
    from .client_hello import ClientHello
    from .tls_socket import TLSSocket

__all__ = ["Context", "VerifyCallback", "AlpnSelectCallback", "DEFAULT_SESSION_ID", "NO_OVERLAPPING_PROTOCOLS"]

VerifyCallback = Callable[["TLSSocket", crypto.X509, int, int, int], bool]
"""``callback(conn, x509, errnum, errdepth, ok) -> bool``; may block on the event loop."""

AlpnSelectCallback = Callable[["TLSSocket", list[bytes]], "bytes | object | None"]
"""``callback(conn, offered) -> protocol``.  `NO_OVERLAPPING_PROTOCOLS` (or None) goes on
without ALPN; a protocol the client did not offer, or an exception, fails the handshake with
``no_application_protocol``."""


class _NoOverlappingProtocols:
    """The type of `NO_OVERLAPPING_PROTOCOLS` (its own, so a callback's answer can be type-checked)."""

    def __repr__(self) -> str:
        return "NO_OVERLAPPING_PROTOCOLS"


NO_OVERLAPPING_PROTOCOLS = _NoOverlappingProtocols()
"""Returned by an ALPN select callback: continue the handshake without ALPN (pyOpenSSL's name)."""

DEFAULT_SESSION_ID = b"pausetls"
"""Prefix of what the default session id context digests (until `set_session_id` is called):
SHA-256 of the verify mode and depth, the trusted client CAs and, after
`Context.bind_sessions_to_context`, a random nonce of the Context; so a session
resumes only where the same clients would be let in by a full handshake."""

_METHODS = {
    TLS_METHOD: lib.TLS_method,
    TLS_SERVER_METHOD: lib.TLS_server_method,
    TLS_CLIENT_METHOD: lib.TLS_client_method,
}

_EX_DATA_INDEX = 0  # the "app data" slot of SSL_CTX
_STORE_CACHE_MODE = lib.SSL_SESS_CACHE_SERVER | lib.SSL_SESS_CACHE_NO_INTERNAL


def _check(ok: int, what: str) -> None:
    if ok <= 0:
        raise Error(what, drain_error_queue())


def _path(value: str | bytes | os.PathLike[Any]) -> bytes:
    return os.fsencode(value)


def context_of(ptr: Any) -> Context | None:
    """The Context that owns an ``SSL_CTX *``."""
    handle = lib.SSL_CTX_get_ex_data(ptr, _EX_DATA_INDEX)
    return None if handle == ffi.NULL else ffi.from_handle(handle)


class Context:
    """Settings shared by many TLS connections (an ``SSL_CTX``).

    Server contexts get a session id context digesting their client policy
    (`DEFAULT_SESSION_ID`), release
    idle buffers (``SSL_MODE_RELEASE_BUFFERS``) and refuse compression.
    Every context starts at TLS >= 1.2 with the cipher list and groups of
    `pausetls.core.tls_defaults` (Mozilla intermediate for servers, CPython's
    defaults for ``TLS_CLIENT_METHOD``).
    """

    def __init__(self, method: int = TLS_METHOD) -> None:
        try:
            method_fn = _METHODS[method]
        except KeyError:
            raise ValueError(
                f"unknown method {method!r}: use TLS_METHOD, TLS_SERVER_METHOD or TLS_CLIENT_METHOD"
            ) from None
        lib.ERR_clear_error()
        ptr = lib.SSL_CTX_new(method_fn())
        if ptr == ffi.NULL:
            raise Error("SSL_CTX_new failed", drain_error_queue())
        self._ctx = ffi.gc(ptr, _free_ctx)
        _live.acquire("contexts")
        self._handle = ffi.new_handle(self)
        lib.SSL_CTX_set_ex_data(self._ctx, _EX_DATA_INDEX, self._handle)
        self.hooks = ContextHooks()  # the user callbacks, read by the OpenSSL callbacks
        self._app_data: Any = None
        self._remote_keys = RemoteKeys(self._ctx)
        self._post_handshake_auth = False
        lib.SSL_CTX_set_options(self._ctx, lib.SSL_OP_NO_COMPRESSION)
        lib.SSL_CTX_set_mode(self._ctx, lib.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | lib.SSL_MODE_RELEASE_BUFFERS)
        # one read() per record instead of two (header, then body): the data path's system calls halve
        lib.SSL_CTX_set_read_ahead(self._ctx, 1)
        apply_defaults(self._ctx, method)
        self._cipher_list = default_ciphers(method).encode()  # the user's, less static RSA while remote
        self._client_ca_list_chosen = False
        self.session_cache: SessionCache | None = None
        self.client_session_cache: ClientSessionCache | None = None
        self.ticket_keys: TicketKeyRing | None = None
        self._tickets_per_handshake = 2
        self._session_id = b""
        self._session_id_chosen = False
        self._lazy_trust_sources: list[bytes] = []  # capath directories: their certificates load on demand
        self._session_nonce = b""
        self._session_policy_changed()
        # always installed: they capture the requested server name, bind new sessions to the
        # context chosen by SNI and check resumed ones (`_session_binding`); each chains to the
        # user's callback when there is one
        lib.SSL_CTX_set_client_hello_cb(self._ctx, lib.pausetls_client_hello_cb, ffi.NULL)
        lib.SSL_CTX_set_tlsext_servername_callback(self._ctx, lib.pausetls_servername_cb)
        lib.SSL_CTX_set_cert_verify_callback(self._ctx, lib.pausetls_cert_verify_cb, ffi.NULL)

    def __del__(self) -> None:
        # The SSL_CTX may outlive this object: its connections hold it, and when they become garbage
        # together, the cycle collector may free this object's handle before their SSL_free calls the
        # remove-session callback.  Finalizers run before anything is cleared (PEP 442): from here on
        # callbacks find no Context rather than a dead handle.
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            lib.SSL_CTX_set_ex_data(ctx, _EX_DATA_INDEX, ffi.NULL)

    # -- certificates and keys -------------------------------------------

    def use_certificate_chain_file(self, certfile: str | bytes | os.PathLike[Any]) -> None:
        _check(
            lib.SSL_CTX_use_certificate_chain_file(self._ctx, checked_file(certfile, "certificate chain")),
            f"cannot load certificate chain {certfile!s}",
        )
        self._keys_changed()  # a certificate its key does not match drops the key

    def use_certificate_file(self, certfile: str | bytes | os.PathLike[Any], filetype: int = FILETYPE_PEM) -> None:
        # a leaf-only load is the chain load of a one-certificate file in PEM
        if filetype != FILETYPE_PEM:
            with open(checked_file(certfile, "certificate"), "rb") as f:
                self.use_certificate(f.read())
            return
        self.use_certificate_chain_file(certfile)

    def use_privatekey_file(self, keyfile: str | bytes | os.PathLike[Any], filetype: int = FILETYPE_PEM) -> None:
        _check(
            lib.SSL_CTX_use_PrivateKey_file(self._ctx, checked_file(keyfile, "private key"), filetype),
            f"cannot load private key {keyfile!s}",
        )
        self._keys_changed()

    def use_certificate(self, cert: CertificateLike) -> None:
        """Use *cert* (pyOpenSSL ``X509``, cryptography ``Certificate`` or DER)."""
        use_x509(cert, lambda ptr: lib.SSL_CTX_use_certificate(self._ctx, ptr), "cannot use certificate")
        self._keys_changed()

    def add_extra_chain_cert(self, cert: CertificateLike) -> None:
        ptr = new_x509(cert)  # the context takes ownership on success
        if lib.SSL_CTX_add_extra_chain_cert(self._ctx, ptr) <= 0:
            lib.X509_free(ptr)
            raise Error("cannot add chain certificate", drain_error_queue())

    def use_privatekey(self, pkey: PrivateKeyLike) -> None:
        """Use *pkey* (pyOpenSSL ``PKey``, cryptography private key or DER)."""
        use_pkey(pkey, lambda ptr: lib.SSL_CTX_use_PrivateKey(self._ctx, ptr), "cannot use private key")
        self._keys_changed()

    def use_remote_private_key(self, sign: SignCallback) -> None:
        """Sign handshakes with ``sign(conn, scheme, digest) -> signature``: the key lives elsewhere.

        Call it after the certificate is set (its public key is the key's public half).  *scheme* is
        the TLS SignatureScheme name (``ecdsa_secp256r1_sha256``, ``rsa_pss_rsae_sha256``, ...,
        ``rsa_pkcs1_sha256`` under TLS 1.2; all are listed in the README), *digest*
        the hash of the signed data under that scheme.  Return the signature TLS expects: DER for
        ECDSA, the raw block for RSA.  Like the other hooks, ``sign`` may block on the loop or
        return a pending result, and `set_callback_timeout` bounds it; an exception or a timeout
        fails the handshake with internal_error.  EC and RSA keys, server and client contexts.

        It replaces the key of the current certificate's type, local or remote, and a later
        ``use_privatekey`` of that type replaces it: one key per type, so an EC and an RSA
        certificate may each have a signer of their own.  While the RSA key is remote, TLS 1.2
        suites with static RSA key exchange are left out of the cipher list (a remote key cannot
        decrypt); the list set with `set_cipher_list` comes back once the RSA key is local.
        """
        self._remote_keys.install(sign)
        self._apply_ciphers(self._cipher_list)

    def check_privatekey(self) -> None:
        _check(lib.SSL_CTX_check_private_key(self._ctx), "private key does not match the certificate")

    # -- verification ----------------------------------------------------

    def load_verify_locations(
        self, cafile: str | bytes | os.PathLike[Any] | None, capath: str | bytes | os.PathLike[Any] | None = None
    ) -> None:
        """Trust the CAs in *cafile* (PEM) and in the hashed directory *capath*.

        A server also names the CAs of *cafile* in its certificate request (as
        ``openssl s_server`` and nginx do), so a client holding several
        certificates can pick one; unless `set_client_ca_list` chose the list.
        The CAs of *capath* are not named: OpenSSL reads that directory lazily,
        by hash, and it is often a whole system store, too big for a
        handshake message; name them with `add_client_ca`.
        """
        if cafile is None and capath is None:
            raise ValueError("give cafile, capath or both")
        _check(
            lib.SSL_CTX_load_verify_locations(
                self._ctx,
                ffi.NULL if cafile is None else checked_file(cafile, "CA file"),
                ffi.NULL if capath is None else checked_file(capath, "CA directory"),
            ),
            "cannot load verify locations",
        )
        if capath is not None:
            self._lazy_trust_sources.append(b"capath:" + _path(capath))
        self._session_policy_changed()
        if cafile is not None and not self._client_ca_list_chosen:
            self._add_client_ca_file(_path(cafile))

    def _add_client_ca_file(self, cafile: bytes) -> None:
        loaded = lib.SSL_load_client_CA_file(cafile)
        if loaded == ffi.NULL:  # a file of CRLs only names no CA: nothing to report, the trust store took it
            lib.ERR_clear_error()
            return
        try:
            added = names_of_stack(loaded)
        finally:
            lib.pausetls_x509_name_stack_free(loaded)
        # a new list rather than OpenSSL's in-place merge, which sorts: the names keep the files' order
        names = list(dict.fromkeys(names_of_stack(lib.SSL_CTX_get_client_CA_list(self._ctx)) + added))
        lib.SSL_CTX_set_client_CA_list(self._ctx, new_name_stack(names))  # takes ownership, frees the old list

    def set_client_ca_list(self, certificate_authorities: Sequence[NameLike]) -> None:
        """Server: name exactly these CAs in the certificate request (pyOpenSSL ``X509Name``,
        cryptography ``Name`` or DER), replacing the ones `load_verify_locations` named;
        later ``load_verify_locations`` calls no longer add theirs.  Verification is unchanged:
        the names only help the client choose."""
        stack = new_name_stack(certificate_authorities)
        lib.SSL_CTX_set_client_CA_list(self._ctx, stack)  # takes ownership, frees the old list
        self._client_ca_list_chosen = True

    def add_client_ca(self, certificate_authority: CertificateLike) -> None:
        """Server: also name *certificate_authority*'s subject in the certificate request."""
        use_x509(
            certificate_authority,
            lambda ptr: lib.SSL_CTX_add_client_CA(self._ctx, ptr),
            "cannot add client CA",
        )

    def set_default_verify_paths(self) -> None:
        _check(lib.SSL_CTX_set_default_verify_paths(self._ctx), "cannot set default verify paths")
        self._lazy_trust_sources.append(b"default-verify-paths")
        self._session_policy_changed()

    def set_verify(self, mode: int, callback: VerifyCallback | None = None) -> None:
        """Set the verify mode, and optionally ``callback(conn, x509, errnum, errdepth, ok)``.

        The callback runs once per certificate of the chain and may block on
        the event loop (it pauses the handshake).  True accepts this
        certificate, False rejects it; an exception rejects it too, and is
        re-raised from the handshake, and so does an answer that is not a
        bool or an int.  Fails closed.  OpenSSL does not verify a resumed
        session; pausetls verifies the session's peer certificate again
        against the trust store in force, calling the callback as in a full
        handshake (real ``ok`` and error), so one rejected now stays out.
        """
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self.hooks.verify = callback
        cb = ffi.NULL if callback is None else lib.pausetls_verify_cb
        lib.SSL_CTX_set_verify(self._ctx, mode, cb)
        self._session_policy_changed()

    def get_verify_mode(self) -> int:
        return int(lib.SSL_CTX_get_verify_mode(self._ctx))

    def get_verify_callback(self) -> VerifyCallback | None:
        return self.hooks.verify  # type: ignore[no-any-return]

    def set_verify_depth(self, depth: int) -> None:
        lib.SSL_CTX_set_verify_depth(self._ctx, depth)
        self._session_policy_changed()

    def set_post_handshake_auth(self, on: bool) -> None:
        """Client: offer TLS 1.3 post-handshake authentication, so a server may ask for the
        certificate after the handshake (its ``verify_client_post_handshake``); off by default.
        The request is answered inside a later read, a remote key signing as in a handshake."""
        lib.SSL_CTX_set_post_handshake_auth(self._ctx, int(on))
        self._post_handshake_auth = bool(on)

    def get_post_handshake_auth(self) -> bool:
        return self._post_handshake_auth

    # -- protocol --------------------------------------------------------

    def set_cipher_list(self, ciphers: str | bytes) -> None:
        """TLS 1.2 and older cipher list (OpenSSL syntax), less static RSA while the RSA key is remote.

        On an error the list in force before stays."""
        wanted = _text(ciphers)
        try:
            self._apply_ciphers(wanted)
        except Error:
            self._apply_ciphers(self._cipher_list)
            raise
        self._cipher_list = wanted

    def _apply_ciphers(self, ciphers: bytes) -> None:
        wanted = ciphers.decode(errors="replace")
        _check(lib.SSL_CTX_set_cipher_list(self._ctx, ciphers), f"no cipher matches {wanted!r}")
        if self._remote_keys.rsa_is_remote:
            disable_static_rsa(self._ctx)

    def _keys_changed(self) -> None:
        """After a certificate or key change: keep the signers of the remote keys still held, and
        static RSA out only while the RSA key is remote."""
        self._remote_keys.refresh()
        self._apply_ciphers(self._cipher_list)

    def set_ciphersuites(self, ciphersuites: str | bytes) -> None:
        """TLS 1.3 cipher suites (``TLS_AES_128_GCM_SHA256:...``)."""
        _check(
            lib.SSL_CTX_set_ciphersuites(self._ctx, _text(ciphersuites)), f"bad TLS 1.3 ciphersuites {ciphersuites!r}"
        )

    def set_groups(self, groups: str | bytes) -> None:
        """Key exchange groups (curves), in order of preference: ``"X25519:P-256:P-384"``."""
        _check(lib.SSL_CTX_set1_groups_list(self._ctx, _text(groups)), f"bad groups {groups!r}")

    def load_tmp_dh(self, dhfile: str | bytes | os.PathLike[Any]) -> None:
        """Server: DH parameters (PEM) for the DHE suites of the default list; without them
        OpenSSL negotiates ECDHE only.  Use 2048 bits or more (``openssl genpkey -genparam
        -algorithm DH -pkeyopt group:ffdhe2048``)."""
        params = lib.pausetls_read_dh_params(checked_file(dhfile, "DH parameters"))
        if params == ffi.NULL:
            raise Error(f"cannot load DH parameters from {dhfile!s}", drain_error_queue())
        if lib.SSL_CTX_set0_tmp_dh_pkey(self._ctx, params) <= 0:  # takes ownership on success only
            lib.EVP_PKEY_free(params)
            raise Error("cannot use DH parameters", drain_error_queue())

    def set_min_proto_version(self, version: int) -> None:
        _check(lib.SSL_CTX_set_min_proto_version(self._ctx, version), f"bad protocol version {version!r}")

    def set_max_proto_version(self, version: int) -> None:
        _check(lib.SSL_CTX_set_max_proto_version(self._ctx, version), f"bad protocol version {version!r}")

    def set_options(self, options: int) -> int:
        """Add option bits (``OP_*``); returns the options now in force."""
        return int(lib.SSL_CTX_set_options(self._ctx, options))

    def get_options(self) -> int:
        return int(lib.SSL_CTX_get_options(self._ctx))

    def set_read_ahead(self, on: bool) -> None:
        """Read ahead (on by default): OpenSSL reads whatever the socket holds in one system call instead
        of each record's header and body apart.  Turn it off for a protocol that goes on in plaintext on
        the same socket after `TLSSocket.unwrap` (read-ahead may have taken those bytes already)."""
        lib.SSL_CTX_set_read_ahead(self._ctx, int(on))

    def get_read_ahead(self) -> bool:
        return bool(lib.SSL_CTX_get_read_ahead(self._ctx))

    def set_mode(self, mode: int) -> int:
        """Add mode bits (``MODE_*``); returns the mode now in force."""
        return int(lib.SSL_CTX_set_mode(self._ctx, mode))

    def set_alpn_protos(self, protos: Sequence[bytes]) -> None:
        """Protocols a client offers, in order of preference."""
        wire = b"".join(bytes([len(p)]) + p for p in protos)
        if any(not 0 < len(p) < 256 for p in protos):
            raise ValueError("each ALPN protocol must be 1 to 255 bytes")
        # SSL_CTX_set_alpn_protos returns 0 on success
        if lib.SSL_CTX_set_alpn_protos(self._ctx, wire, len(wire)) != 0:
            raise Error("cannot set ALPN protocols", drain_error_queue())

    def set_alpn_select_callback(self, callback: AlpnSelectCallback) -> None:
        """Server: ``callback(conn, offered_protocols) -> chosen`` (may block on the loop)."""
        self.hooks.alpn_select = callback
        lib.SSL_CTX_set_alpn_select_cb(self._ctx, lib.pausetls_alpn_select_cb, ffi.NULL)

    # -- pausable handshake hooks ----------------------------------------
    #
    # Each callback may block on the event loop (the handshake pauses) or
    # return a pending value that something else completes later: whatever
    # the connection's driver recognises (`Driver.pending`): under gevent an
    # ``AsyncResult``, ``Event`` or ``Greenlet``, or a ``concurrent.futures.Future``.
    # Raising `pausetls.Alert` fails the handshake with that alert; any other
    # exception fails it with internal_error and is re-raised from the
    # handshake as `CallbackError`.  `set_callback_timeout` bounds them all.

    def set_callback_timeout(self, seconds: float | None) -> None:
        """Longest any one handshake callback may take (pauses included); None: no limit."""
        self.hooks.callback_timeout = seconds

    @property
    def callback_timeout(self) -> float | None:
        return self.hooks.callback_timeout

    def set_tlsext_servername_callback(self, callback: Callable[[TLSSocket], Any]) -> None:
        """Server: ``callback(conn)`` after the SNI name is read (``conn.get_servername()``).

        It may switch the connection to another context (``conn.set_context``)
        or load a certificate for it (``conn.use_certificate``...).  Returning
        False rejects the handshake with unrecognized_name.
        """
        self.hooks.servername = callback
        lib.SSL_CTX_set_tlsext_servername_callback(self._ctx, lib.pausetls_servername_cb)

    def set_client_hello_callback(self, callback: Callable[[TLSSocket, ClientHello], Any]) -> None:
        """Server: ``callback(conn, hello)`` first thing, with what the client offered (`ClientHello`).

        Returning False rejects the handshake with handshake_failure.
        """
        self.hooks.client_hello = callback
        lib.SSL_CTX_set_client_hello_cb(self._ctx, lib.pausetls_client_hello_cb, ffi.NULL)

    def set_certificate_callback(self, callback: Callable[[TLSSocket], Any]) -> None:
        """``callback(conn)`` before the certificate is chosen: set it with ``conn.use_certificate``
        and ``conn.use_privatekey``.  Returning False fails the handshake (internal_error)."""
        self.hooks.certificate = callback
        lib.SSL_CTX_set_cert_cb(self._ctx, lib.pausetls_cert_cb, ffi.NULL)

    def set_ocsp_server_callback(self, callback: Callable[[TLSSocket, Any], Any], data: Any = None) -> None:
        """Server: ``callback(conn, data) -> bytes``, the DER OCSP response to staple (b"" for none).

        Called only when the client asks for one.
        """
        self.hooks.ocsp_server = callback
        self.hooks.ocsp_data = data
        lib.SSL_CTX_set_tlsext_status_cb(self._ctx, lib.pausetls_status_cb)

    def set_ocsp_client_callback(self, callback: Callable[[TLSSocket, bytes, Any], Any], data: Any = None) -> None:
        """Client: ``callback(conn, ocsp_der, data) -> bool`` with the stapled response (b"" if none);
        False fails the handshake with bad_certificate_status_response.  Call ``conn.request_ocsp()``."""
        self.hooks.ocsp_client = callback
        self.hooks.ocsp_data = data
        lib.SSL_CTX_set_tlsext_status_cb(self._ctx, lib.pausetls_status_cb)

    # -- sessions --------------------------------------------------------

    def set_session_id(self, buf: bytes) -> None:
        """Session id context: sessions resume only on contexts with the same one.

        It replaces the default, a digest of this context's client policy
        (`DEFAULT_SESSION_ID`), and is not recomputed when the policy changes:
        choose one to share sessions deliberately between contexts or servers
        whose policies differ.  A resumed peer is still verified again against
        the trust store in force.
        """
        self._apply_session_id(buf)
        self._session_id_chosen = True

    def bind_sessions_to_context(self) -> None:
        """Let sessions made on this Context resume only on this Context (not on another with the same policy).

        Mixes a random nonce of this Context into the default session id
        context; has no effect after `set_session_id`.
        """
        self._session_nonce = os.urandom(16)
        self._session_policy_changed()

    def _session_policy_changed(self) -> None:
        """Recompute the default session id context after a change to who may connect."""
        if not self._session_id_chosen:
            digest = policy_session_id(self._ctx, DEFAULT_SESSION_ID, self._lazy_trust_sources, self._session_nonce)
            self._apply_session_id(digest)

    def _apply_session_id(self, buf: bytes) -> None:
        if len(buf) > 32:
            raise ValueError("session id context is at most 32 bytes")
        _check(lib.SSL_CTX_set_session_id_context(self._ctx, buf, len(buf)), "cannot set session id context")
        self._session_id = buf

    def get_session_id(self) -> bytes:
        return self._session_id

    def set_session_cache(
        self,
        store: SessionStore | None = None,
        *,
        timeout: float = 0.5,
        sealer: SessionSealer | None = None,
        namespace: str = "pausetls",
        mode: int = _STORE_CACHE_MODE,
        max_pending_writes: int = 1024,
        keep_sessions_on_eof: bool = True,
        driver: Driver | None = None,
    ) -> SessionCache:
        """Keep this server's sessions in *store* (default: in memory; memcached, Redis, ...), sealed.

        Lookups pause the handshake for at most *timeout* seconds; a failure is
        a full handshake.  TLS 1.2 resumes by session id and TLS 1.3 by
        *stateful* tickets (``OP_NO_TICKET`` is set): stateless tickets would
        bypass the store.  By default OpenSSL's in-process cache is off
        (``mode``) so the store is the one source of truth.  *sealer* holds
        the AES-256-GCM keys; share it (`SessionSealer.from_file`) between
        processes that share the store.

        OpenSSL 3 discards a session when its connection ends without
        close_notify, which most HTTP clients (CPython's ``ssl`` among them)
        do.  *keep_sessions_on_eof* sets ``OP_IGNORE_UNEXPECTED_EOF`` so those
        sessions stay resumable; the price is that such an EOF reads as a
        clean close (no `TruncatedStreamError`) on this context.

        The cache (and its store) waits through one *driver*: the server this
        context is given to binds it (`SessionCache.bind`) unless given here.
        """
        if store is None:
            from ..sessions.stores.memory import MemoryStore

            store = MemoryStore()
        backend = StoreBackend(store, sealer or SessionSealer.generate(), namespace)
        cache = SessionCache(backend, timeout=timeout, max_pending_writes=max_pending_writes)
        return self._install_session_cache(cache, mode, keep_sessions_on_eof, driver)

    def set_session_callbacks(
        self,
        get: Callable[[bytes], bytes | None] | None = None,
        new: Callable[[bytes, bytes], Any] | None = None,
        remove: Callable[[bytes], Any] | None = None,
        *,
        timeout: float = 0.5,
        mode: int = _STORE_CACHE_MODE,
        keep_sessions_on_eof: bool = True,
        driver: Driver | None = None,
    ) -> SessionCache:
        """Low level: ``get(session_id) -> der | None`` may block (it pauses the handshake);
        ``new(session_id, der)`` and ``remove(session_id)`` run later in their own greenlet.
        The DER holds the master secret: seal it before it leaves the process.
        *mode*, *keep_sessions_on_eof* and *driver* as for `set_session_cache`."""
        cache = SessionCache(CallbackBackend(get, new, remove), timeout=timeout)
        return self._install_session_cache(cache, mode, keep_sessions_on_eof, driver)

    def _install_session_cache(
        self, cache: SessionCache, mode: int, keep_sessions_on_eof: bool, driver: Driver | None
    ) -> SessionCache:
        if driver is not None:
            cache.bind(driver)
        self.session_cache = cache
        if keep_sessions_on_eof:
            self.set_options(lib.SSL_OP_IGNORE_UNEXPECTED_EOF)
        self._apply_resumption_policy()
        lib.SSL_CTX_set_session_cache_mode(self._ctx, mode)
        lib.SSL_CTX_sess_set_get_cb(self._ctx, lib.pausetls_session_get_cb)
        lib.SSL_CTX_sess_set_new_cb(self._ctx, lib.pausetls_session_new_cb)
        lib.SSL_CTX_sess_set_remove_cb(self._ctx, lib.pausetls_session_remove_cb)
        return cache

    def set_client_session_cache(self, max_entries: int = 1024, *, tickets_per_key: int = 4) -> ClientSessionCache:
        """Client: keep the sessions servers give and offer them again on the next connection to the
        same (host, port, server_hostname) (`ClientSessionCache`).

        TLS 1.2 sessions (ids and tickets) are offered until replaced or
        expired; TLS 1.3 tickets, which arrive after the handshake, inside a
        read, are offered once each.  A session given with
        ``connect(..., session=)`` or `TLSSocket.set_session` wins over the
        cache.  At most *max_entries* keys (least recently used dropped) and
        *tickets_per_key* TLS 1.3 tickets per key.
        """
        if self.session_cache is not None:
            raise ValueError("this context has a server session cache (set_session_cache): use another for clients")
        cache = ClientSessionCache(max_entries, tickets_per_key)
        self.client_session_cache = cache
        lib.SSL_CTX_set_session_cache_mode(self._ctx, lib.SSL_SESS_CACHE_CLIENT | lib.SSL_SESS_CACHE_NO_INTERNAL_STORE)
        lib.SSL_CTX_sess_set_new_cb(self._ctx, lib.pausetls_session_new_cb)
        return cache

    def set_ticket_keys(self, keys: TicketKeyRing, *, tickets_per_handshake: int = 2) -> None:
        """Server: stateless session tickets (TLS 1.2 RFC 5077 and TLS 1.3) encrypted with *keys*.

        *keys* is a `pausetls.TicketKeys` (a ``pausetls keys`` file: every
        process given the same file resumes the others' tickets) or a
        store-backed `pausetls.StoredTicketKeys`, whose lookups pause the
        handshake.  The newest key encrypts; a ticket under an older key
        resumes and is renewed.  A key the ring does not have (or cannot get
        in time) is a full handshake, never a failure.

        With a session cache too (`set_session_cache`): TLS 1.3 and TLS 1.2
        clients that support tickets resume by ticket, other TLS 1.2 clients
        by session id through the store.  See `_apply_resumption_policy`.
        TLS 1.3 sends *tickets_per_handshake* tickets after each handshake.
        """
        self.ticket_keys = keys
        self._tickets_per_handshake = tickets_per_handshake
        _check(
            lib.SSL_CTX_set_tlsext_ticket_key_evp_cb(self._ctx, lib.pausetls_ticket_key_cb),
            "cannot install the ticket key callback",
        )
        _check(
            lib.SSL_CTX_set_session_ticket_cb(self._ctx, ffi.NULL, lib.pausetls_ticket_decrypted_cb, ffi.NULL),
            "cannot install the ticket session callback",
        )
        self._apply_resumption_policy()

    def _apply_resumption_policy(self) -> None:
        """How sessions resume, from what is installed (in either order):

        * ticket keys: stateless tickets under them (``OP_NO_TICKET`` cleared);
          a session cache, if any, serves TLS 1.2 clients without ticket support;
        * a session cache only: ``OP_NO_TICKET``, so TLS 1.2 resumes by session
          id and TLS 1.3 by one *stateful* ticket, both through the store;
        * neither: OpenSSL's defaults (stateless tickets under a key made per
          ``SSL_CTX``: resumption on this Context only).
        """
        if self.ticket_keys is not None:
            lib.SSL_CTX_clear_options(self._ctx, lib.SSL_OP_NO_TICKET)
            lib.SSL_CTX_set_num_tickets(self._ctx, self._tickets_per_handshake)
        elif self.session_cache is not None:
            self.set_options(lib.SSL_OP_NO_TICKET)
            lib.SSL_CTX_set_num_tickets(self._ctx, 1)  # one stateful ticket: one store write per handshake

    def bind_resumption(self, driver: Driver) -> None:
        """Bind the session cache and the ticket keys (what waits on a store) to the *driver* of the server
        this context is given to; `ValueError` if one already serves another driver."""
        if self.session_cache is not None:
            self.session_cache.bind(driver)
        if self.ticket_keys is not None:
            self.ticket_keys.bind(driver)

    def set_timeout(self, timeout: int) -> int:
        """Session lifetime in seconds; returns the previous one."""
        return int(lib.SSL_CTX_set_timeout(self._ctx, timeout))

    def get_timeout(self) -> int:
        return int(lib.SSL_CTX_get_timeout(self._ctx))

    def set_session_cache_mode(self, mode: int) -> int:
        return int(lib.SSL_CTX_set_session_cache_mode(self._ctx, mode))

    # -- key log (debugging) ---------------------------------------------
    #
    # Not a pausable hook: OpenSSL hands over each line as the secret is derived, and a
    # handshake never waits on it (`pausetls.core._keylog`).

    def set_keylog_callback(self, callback: KeyLogCallback | None) -> None:
        """``callback(conn, line)`` with each NSS key log line (bytes, no newline), as pyOpenSSL.

        It runs inside the handshake and must be quick (append to a list, a
        queue, a file): it cannot pause (`pausetls.pause` raises
        `PauseError`), and an exception it raises is logged once and never
        fails the handshake.  The lines decrypt the connection: keep them
        out of production logs.  None stops it (`keylog_filename` stays).
        """
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self.hooks.keylog.callback = callback
        self._update_keylog()

    @property
    def keylog_filename(self) -> str | None:
        """Append NSS key log lines to this file (stdlib ``SSLContext.keylog_filename``); None: stop.

        The file is opened in append mode, created 0600, begins with CPython's
        comment line, and gets one locked, flushed write per line.
        """
        keylog_file = self.hooks.keylog.file
        return None if keylog_file is None else keylog_file.path

    @keylog_filename.setter
    def keylog_filename(self, path: str | os.PathLike[str] | None) -> None:
        if path is not None:
            checked_file(path, "key log file", must_exist=False)  # its directory, at least
        opened = None if path is None else KeyLogFile(path)
        previous, self.hooks.keylog.file = self.hooks.keylog.file, opened
        if previous is not None:
            previous.close()
        self._update_keylog()

    def _update_keylog(self) -> None:
        callback = lib.pausetls_keylog_cb if self.hooks.keylog.active else ffi.NULL
        lib.SSL_CTX_set_keylog_callback(self._ctx, callback)

    # -- application data ------------------------------------------------

    def set_app_data(self, data: Any) -> None:
        self._app_data = data

    def get_app_data(self) -> Any:
        return self._app_data


def _text(value: str | bytes) -> bytes:
    return value.encode("ascii") if isinstance(value, str) else value


def _free_ctx(ptr: Any) -> None:
    lib.SSL_CTX_free(ptr)
    _live.release("contexts")
