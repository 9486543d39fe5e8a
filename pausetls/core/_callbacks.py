"""The ``extern "Python"`` bodies: where OpenSSL calls back into pausetls.

Each one finds the `TLSSocket` behind the ``SSL *``, runs the user callback
through `Job.run_callback` (which may pause, keeps the error queue, catches
every exception) and turns the outcome into the value OpenSSL expects,
failing closed.  If a body itself raises, cffi returns 0 (``onerror``
logs it), which is the failure value of each of these callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ._binding import ffi, lib
from ._certs import x509_to_pyopenssl
from ._job import Job, pause
from ._remote_key import signer_of
from ._session_binding import refusal_alert, requested_server_name, same_server_name, settle_session
from .client_hello import read_client_hello
from .context import NO_OVERLAPPING_PROTOCOLS, context_of
from .errors import Alert
from .session import Session, session_der
from .tls_socket import TLSSocket, calling_connection, connection_of

log = logging.getLogger("pausetls")

_STORE_SSL_INDEX = lib.SSL_get_ex_data_X509_STORE_CTX_idx()
_ALPN_NOACK = 3  # SSL_TLSEXT_ERR_NOACK: go on without ALPN
_ALPN_ALERT_FATAL = 2  # SSL_TLSEXT_ERR_ALERT_FATAL: no_application_protocol
_ALPN_OK = 0


def _report(exc_type: Any, exc: BaseException, tb: Any) -> None:
    log.error("internal error in an OpenSSL callback", exc_info=(exc_type, exc, tb))


def _job_of(conn: TLSSocket) -> Job:
    """The job running the C call that invoked this callback.

    OpenSSL only calls back from inside a call the TLS socket made as a job
    (whose `Job` object is made now if this is the call's first callback);
    anything else gets a job that refuses to pause.
    """
    return conn.callback_job()


def _run_hook(conn: TLSSocket, name: str, callback: Any, *args: Any, returns: tuple[type, ...]) -> tuple[bool, Any]:
    """Run a pausable user callback inside the handshake's job.

    A pending result (whatever the connection's driver recognises, `Driver.pending`)
    is waited for: the handshake pauses until something else completes it; the
    context's ``callback_timeout`` bounds the whole call.  A value that is none of the *returns* types fails the
    callback with `TypeError`: a truthy mistake (a coroutine, a Future, a
    string) must not pass for a yes.  Returns ``(ran, value)`` as
    `Job.run_callback` does.
    """
    timeout = conn.get_context().hooks.callback_timeout
    driver = conn.driver

    def call() -> Any:
        result = callback(*args)
        waitable = driver.pending(result)
        if waitable is not None:
            # the timeout here too: a driver that cannot cut a running call (threads) still bounds the wait
            result = pause(waitable, timeout)
        if not isinstance(result, returns):
            expected = " or ".join("None" if t is type(None) else t.__name__ for t in returns)
            raise TypeError(f"it returned {type(result).__name__}, expected {expected}")
        return result

    if timeout is None:
        return _job_of(conn).run_callback(name, True, call)
    return _job_of(conn).run_callback(name, True, driver.call_with_timeout, call, timeout)


def _alert(conn: TLSSocket, name: str, rejected: int) -> int:
    """The alert for a failed hook: the callback's own `Alert`, *rejected* if it said no, else internal_error.

    A refusal is recorded as an `Alert` on the job, so the handshake raises a clear error naming the callback.
    """
    job = _job_of(conn)
    if job.exception is None:
        job.exception = Alert(rejected, f"the {name} callback returned False")
        job.failed_callback = name
    if isinstance(job.exception, Alert):
        return job.exception.description
    return int(lib.SSL_AD_INTERNAL_ERROR)


_VERDICT = (bool, int)  # verify: pyOpenSSL's callbacks may return their ``ok`` argument, an int
_GO_ON = (bool, type(None))  # the other hooks: False rejects, None or True goes on
_ALPN_CHOICE = (bytes, type(None), type(NO_OVERLAPPING_PROTOCOLS))


@ffi.def_extern(onerror=_report)
def pausetls_verify_cb(preverify_ok: int, store_ctx: Any) -> int:
    """``SSL_verify_cb``: 1 accepts this certificate, 0 rejects it (handshake fails with an alert)."""
    ssl = lib.X509_STORE_CTX_get_ex_data(store_ctx, _STORE_SSL_INDEX)
    conn = connection_of(ssl)
    callback = None if conn is None else conn.verify_callback()
    if conn is None or callback is None:
        return preverify_ok
    errnum = lib.X509_STORE_CTX_get_error(store_ctx)
    depth = lib.X509_STORE_CTX_get_error_depth(store_ctx)
    cert = x509_to_pyopenssl(lib.X509_STORE_CTX_get_current_cert(store_ctx))
    ran, accepted = _run_hook(conn, "verify", callback, conn, cert, errnum, depth, preverify_ok, returns=_VERDICT)
    if ran and accepted:
        if errnum != lib.X509_V_OK and conn.verify_error_accepted is None:
            conn.verify_error_accepted = errnum
        lib.X509_STORE_CTX_set_error(store_ctx, lib.X509_V_OK)
        return 1
    if not ran or errnum == lib.X509_V_OK:
        # raised, timed out, was cancelled, or refused a chain OpenSSL liked
        lib.X509_STORE_CTX_set_error(store_ctx, lib.X509_V_ERR_APPLICATION_VERIFICATION)
    return 0


@ffi.def_extern(onerror=_report)
def pausetls_alpn_select_cb(ssl: Any, out: Any, outlen: Any, inp: Any, inlen: int, arg: Any) -> int:
    """``SSL_CTX_alpn_select_cb_func``: pick one of the client's protocols."""
    conn = connection_of(ssl)
    callback = None if conn is None else conn.get_context().hooks.alpn_select
    if conn is None or callback is None:
        return _ALPN_NOACK
    wire = ffi.buffer(inp, inlen)[:]
    offered = []
    while wire:
        offered.append(wire[1 : 1 + wire[0]])
        wire = wire[1 + wire[0] :]
    ran, chosen = _run_hook(conn, "alpn_select", callback, conn, offered, returns=_ALPN_CHOICE)
    if ran and (chosen is None or chosen is NO_OVERLAPPING_PROTOCOLS):
        return _ALPN_NOACK
    if not ran or chosen not in offered:
        return _ALPN_ALERT_FATAL
    # point into the client's own list, which outlives this call
    index = ffi.buffer(inp, inlen)[:].index(bytes([len(chosen)]) + chosen)
    out[0] = ffi.cast("const unsigned char *", inp) + index + 1
    outlen[0] = len(chosen)
    return _ALPN_OK


def _session_ids(session: Any) -> tuple[bytes, bytes]:
    """(session id context, session id) of an ``SSL_SESSION``."""
    length = ffi.new("unsigned int *")
    sid = lib.SSL_SESSION_get_id(session, length)
    session_id = bytes(ffi.buffer(sid, length[0]))
    ctx = lib.SSL_SESSION_get0_id_context(session, length)
    return bytes(ffi.buffer(ctx, length[0])), session_id


def _is_tls13(ssl: Any) -> bool:
    return bool(lib.SSL_version(ssl) == lib.TLS1_3_VERSION)


def _session_from_der(der: bytes) -> Any:
    return lib.d2i_SSL_SESSION(ffi.NULL, ffi.new("const unsigned char **", ffi.from_buffer(der)), len(der))


@ffi.def_extern(onerror=_report)
def pausetls_session_get_cb(ssl: Any, data: Any, length: int, copy: Any) -> Any:
    """``get_session_cb``: a new ``SSL_SESSION`` OpenSSL takes over (``*copy = 0``), or NULL (a miss)."""
    copy[0] = 0  # the session we return is a fresh d2i with one reference, which becomes OpenSSL's
    conn = connection_of(ssl)
    cache = None if conn is None else conn.session_context.session_cache
    if conn is None or cache is None:
        return ffi.NULL
    session_id = bytes(ffi.buffer(data, length))
    sid_ctx = conn.session_context.get_session_id()
    ran, der = _job_of(conn).run_callback("session_get", True, cache.lookup, conn.driver, sid_ctx, session_id)
    if not ran or der is None:
        cache.record_hit(False)
        return ffi.NULL
    session = _session_from_der(der)
    if session == ffi.NULL:
        lib.ERR_clear_error()
        cache.record_rejected("not a DER SSL_SESSION")
        cache.record_hit(False)
        return ffi.NULL
    if _session_ids(session) != (sid_ctx, session_id):
        lib.SSL_SESSION_free(session)
        cache.record_rejected("session id or session id context differs from the one looked up")
        cache.record_hit(False)
        return ffi.NULL
    if not same_server_name(session, conn.requested_server_name):
        lib.SSL_SESSION_free(session)  # a miss, not a refusal: the client gets a full handshake
        cache.record_rejected("made for another server name than the client asks for")
        cache.record_hit(False)
        return ffi.NULL
    cache.record_hit(True)
    return session


@ffi.def_extern(onerror=_report)
def pausetls_session_new_cb(ssl: Any, session: Any) -> int:
    """``new_session_cb``: a server copies the session out and stores it later (0: OpenSSL keeps its
    reference); a client with a `ClientSessionCache` keeps the session itself (1: the reference is ours)."""
    conn = connection_of(ssl)
    if conn is not None and not conn.server_side:
        return _keep_client_session(conn, session)
    cache = None if conn is None else conn.session_context.session_cache
    stateless = conn is not None and conn.session_context.ticket_keys is not None and _is_tls13(ssl)
    if conn is not None and cache is not None and not stateless:  # a stateless TLS 1.3 ticket needs no store
        sid_ctx, session_id = _session_ids(session)
        ttl = int(lib.SSL_SESSION_get_timeout(session))
        cache.save_later(conn.driver, sid_ctx, session_id, session_der(session), ttl)
    return 0


def _keep_client_session(conn: TLSSocket, session: Any) -> int:
    cache = conn.get_context().client_session_cache
    key = conn.session_key()
    if cache is None or key is None:
        return 0
    cache.add(key, Session(session))  # the Session frees the reference OpenSSL handed over
    return 1


@ffi.def_extern(onerror=_report)
def pausetls_ticket_key_cb(ssl: Any, key_name: Any, iv: Any, cipher_ctx: Any, mac_ctx: Any, enc: int) -> int:
    """The ticket key callback (``SSL_CTX_set_tlsext_ticket_key_evp_cb``); its lookups may pause.

    Encrypting: 1 (a ticket under the ring's current key) or 0 (no ticket).
    Decrypting (``tls_decrypt_ticket``): 1 resumes, 2 resumes and renews the
    ticket (a key that no longer encrypts; always under TLS 1.3), 0 is a full
    handshake.  Never -1, which OpenSSL makes a fatal error: a ring that cannot
    answer must only cost a full handshake.
    """
    conn = connection_of(ssl)
    ring = None if conn is None else conn.session_context.ticket_keys
    if conn is None or ring is None:
        return 0
    if enc:
        ran, key = _ask_ring(conn, ring, ring.for_encryption, conn.driver)
        if not ran or key is None:
            return 0
        ffi.memmove(key_name, key.name, lib.PAUSETLS_TICKET_KEY_NAME_BYTES)
        return int(lib.pausetls_ticket_init(cipher_ctx, mac_ctx, key.aes_key, key.hmac_key, iv, 1))
    name = bytes(ffi.buffer(key_name, lib.PAUSETLS_TICKET_KEY_NAME_BYTES))
    ran, found = _ask_ring(conn, ring, ring.for_decryption, conn.driver, name)
    if not ran or found is None:
        return 0
    key, renew = found
    if not lib.pausetls_ticket_init(cipher_ctx, mac_ctx, key.aes_key, key.hmac_key, iv, 0):
        return 0
    # TLS 1.3: OpenSSL sends new tickets after a resumption only when told to renew
    # (tls_decrypt_ticket sets ticket_expected for SSL_TICKET_SUCCESS_RENEW), and clients
    # (browsers, CPython) use each ticket once: without one they would resume only once
    return 2 if renew or _is_tls13(ssl) else 1


def _ask_ring(conn: TLSSocket, ring: Any, lookup: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    """Run a ring lookup (which never raises an ``Exception``) as `Job.run_callback` does.

    A ring that never waits (``timeout`` None: the in-process `TicketKeys`) is asked directly when no
    callback of this call has made a job yet (so none failed): there is nothing to pause for, and a job per
    resumed handshake is a cost every resumption would pay.
    """
    if ring.timeout is None and conn.job is None:
        return True, lookup(*args)
    return _job_of(conn).run_callback("ticket_keys", True, lookup, *args)


@ffi.def_extern(onerror=_report, error=lib.SSL_TICKET_RETURN_IGNORE_RENEW)  # 0 would abort the handshake
def pausetls_ticket_decrypted_cb(ssl: Any, session: Any, key_name: Any, length: int, status: int, arg: Any) -> int:
    """``SSL_CTX_set_session_ticket_cb``'s decrypt callback: the session a ticket held, before OpenSSL uses it.

    A ticket made for another server name than the client asks for now is
    ignored (a full handshake, with a new ticket), as a stored session for
    another name is a miss; never pauses.  Keeps OpenSSL's renew decision.
    """
    if status not in (lib.SSL_TICKET_SUCCESS, lib.SSL_TICKET_SUCCESS_RENEW):
        return int(lib.SSL_TICKET_RETURN_IGNORE_RENEW)  # none, or not ours: OpenSSL's own answer to these
    conn = connection_of(ssl)
    ring = None if conn is None else conn.session_context.ticket_keys
    if conn is None or not same_server_name(session, conn.requested_server_name):
        if ring is not None:
            ring.stats.other_name += 1
        return int(lib.SSL_TICKET_RETURN_IGNORE_RENEW)
    if ring is not None:
        ring.stats.resumed += 1
    return int(lib.SSL_TICKET_RETURN_USE_RENEW if status == lib.SSL_TICKET_SUCCESS_RENEW else lib.SSL_TICKET_RETURN_USE)


@ffi.def_extern(onerror=_report)
def pausetls_session_remove_cb(ctx: Any, session: Any) -> None:
    """``remove_session_cb``: may run under ``ctx->lock``, so it only copies the ids; never pauses."""
    context = context_of(ctx)
    cache = None if context is None else context.session_cache
    if cache is not None:
        cache.forget_later(*_session_ids(session))


def _no_arguments(ssl: Any) -> tuple[Any, ...]:
    return ()


def _hook_with_alert(
    ssl: Any, alert: Any, name: str, outcomes: tuple[int, int, int], arguments: Callable[[Any], tuple[Any, ...]]
) -> int:
    """Run the context's ``hooks.<name>(conn, *arguments(ssl))``.

    *outcomes* is (ok, fail, the alert when the callback said no); arguments are made only when a callback is set.
    """
    ok, fail, rejected = outcomes
    conn = connection_of(ssl)
    callback = None if conn is None else getattr(conn.get_context().hooks, name)
    if conn is None or callback is None:
        return ok
    ran, result = _run_hook(conn, name, callback, conn, *arguments(ssl), returns=_GO_ON)
    if ran and result is not False:
        return ok
    alert[0] = _alert(conn, name, rejected)
    return fail


_SERVERNAME_OUTCOMES = (lib.SSL_TLSEXT_ERR_OK, lib.SSL_TLSEXT_ERR_ALERT_FATAL, lib.SSL_AD_UNRECOGNIZED_NAME)
_CLIENT_HELLO_OUTCOMES = (lib.SSL_CLIENT_HELLO_SUCCESS, lib.SSL_CLIENT_HELLO_ERROR, lib.SSL_AD_HANDSHAKE_FAILURE)


@ffi.def_extern(onerror=_report, error=lib.SSL_TLSEXT_ERR_ALERT_FATAL)  # 0 would be SSL_TLSEXT_ERR_OK
def pausetls_servername_cb(ssl: Any, alert: Any, arg: Any) -> int:
    """SNI (runs for every ClientHello, with or without SNI): the user's callback, then the session binding.

    OK, or a fatal alert: unrecognized_name when the callback returns False,
    and the `_session_binding` alert when a resumed session must not be used.
    """
    status = _hook_with_alert(ssl, alert, "servername", _SERVERNAME_OUTCOMES, _no_arguments)
    conn = connection_of(ssl)
    if status != lib.SSL_TLSEXT_ERR_OK or conn is None:
        return status
    if not lib.SSL_session_reused(ssl) or not lib.SSL_get_verify_mode(ssl) & lib.SSL_VERIFY_PEER:
        # binding a new session, or checking a resumed one whose peer is not verified again: C calls, no
        # user code, nothing to pause for (no job to make); should it raise, onerror above fails closed
        ran, refusal = True, settle_session(conn)
    else:  # verifying the resumed peer again may run the verify callback, which may pause
        ran, refusal = _job_of(conn).run_callback("session binding", True, settle_session, conn)
    if ran and refusal is None:
        return status
    if refusal is not None:
        job = _job_of(conn)
        if job.exception is None:  # else a verify callback raised while the peer was verified again
            job.exception = refusal
        alert[0] = refusal_alert(refusal)
    else:
        alert[0] = lib.SSL_AD_INTERNAL_ERROR
    return int(lib.SSL_TLSEXT_ERR_ALERT_FATAL)


@ffi.def_extern(onerror=_report)
def pausetls_client_hello_cb(ssl: Any, alert: Any, arg: Any) -> int:
    """Client hello: note the name the client asks for, then the user's callback: success, or an error
    with an alert (handshake_failure when the callback returns False)."""
    conn = connection_of(ssl)
    if conn is not None:
        conn.requested_server_name = requested_server_name(ssl)
    return _hook_with_alert(ssl, alert, "client_hello", _CLIENT_HELLO_OUTCOMES, lambda ssl: (read_client_hello(ssl),))


@ffi.def_extern(onerror=_report)
def pausetls_cert_cb(ssl: Any, arg: Any) -> int:
    """Certificate selection: 1 to go on, 0 to fail (OpenSSL sends internal_error)."""
    conn = connection_of(ssl)
    callback = None if conn is None else conn.get_context().hooks.certificate
    if conn is None or callback is None:
        return 1
    ran, result = _run_hook(conn, "certificate", callback, conn, returns=_GO_ON)
    if ran and result is not False:
        return 1
    _alert(conn, "certificate", lib.SSL_AD_INTERNAL_ERROR)  # only records why: OpenSSL sends internal_error itself
    return 0


@ffi.def_extern(onerror=_report)
def pausetls_status_cb(ssl: Any, arg: Any) -> int:
    """OCSP status: the server staples a response; the client checks the one it got."""
    conn = connection_of(ssl)
    if conn is None:
        return int(lib.SSL_TLSEXT_ERR_NOACK) if lib.SSL_is_server(ssl) else 1
    hooks = conn.get_context().hooks
    if lib.SSL_is_server(ssl):
        return _staple(ssl, conn, hooks.ocsp_server, hooks.ocsp_data)
    return _check_stapled(ssl, conn, hooks.ocsp_client, hooks.ocsp_data)


def _staple(ssl: Any, conn: TLSSocket, callback: Any, data: Any) -> int:
    if callback is None:
        return int(lib.SSL_TLSEXT_ERR_NOACK)
    ran, response = _run_hook(conn, "ocsp_server", callback, conn, data, returns=(bytes,))
    if not ran:
        return int(lib.SSL_TLSEXT_ERR_ALERT_FATAL)
    if not response:
        return int(lib.SSL_TLSEXT_ERR_NOACK)
    buf = lib.OPENSSL_malloc(len(response))  # OpenSSL takes ownership of the copy
    if buf == ffi.NULL:
        return int(lib.SSL_TLSEXT_ERR_ALERT_FATAL)
    ffi.memmove(buf, response, len(response))
    lib.SSL_set_tlsext_status_ocsp_resp(ssl, buf, len(response))
    return int(lib.SSL_TLSEXT_ERR_OK)


def _check_stapled(ssl: Any, conn: TLSSocket, callback: Any, data: Any) -> int:
    if callback is None:
        return 1
    out = ffi.new("const unsigned char **")
    length = lib.SSL_get_tlsext_status_ocsp_resp(ssl, out)
    stapled = b"" if length <= 0 or out[0] == ffi.NULL else bytes(ffi.buffer(out[0], length))
    ran, accepted = _run_hook(conn, "ocsp_client", callback, conn, stapled, data, returns=_VERDICT)
    if not ran:
        return -1  # an internal error: the handshake fails
    return 1 if accepted else 0


@ffi.def_extern(onerror=_report)
def pausetls_keylog_cb(ssl: Any, line: Any) -> None:
    """``SSL_CTX_keylog_cb_func``: one NSS key log line; runs as a non-pausable hook and never fails the handshake."""
    conn = connection_of(ssl)
    if conn is None:
        return
    keylog = conn.get_context().hooks.keylog
    if keylog.active:
        # pauses refused; an Exception is the hook's to log, a BaseException (cancellation) stays on the job
        _job_of(conn).run_callback("keylog", False, keylog.deliver, conn, ffi.string(line))


@ffi.def_extern(onerror=_report)
def pausetls_remote_sign(
    signer_id: int, scheme: Any, digest: Any, digest_len: int, sig: Any, siglen: Any, sigsize: int
) -> int:
    """The remote-key provider's signer: 1 with the signature in *sig*, 0 fails the handshake.

    OpenSSL calls it from ``EVP_DigestSign`` on the handshake's stack, inside the connection's own
    OpenSSL call (`calling_connection`), whose job it joins like every hook.
    """
    conn = calling_connection()
    if conn is None:
        return 0  # signing outside a handshake of ours: nothing to run the signer in
    job = conn.callback_job()
    signer = signer_of(signer_id)
    if signer is None:  # the key was replaced in its context after this connection took a copy
        missing = f"no signer for remote key #{signer_id}: replaced in its context after this connection was made"
        return _sign_failed(job, LookupError(missing))
    args = (ffi.string(scheme).decode("ascii"), bytes(ffi.buffer(digest, digest_len)))
    ran, signature = _run_hook(conn, _SIGN, signer.sign, conn, *args, returns=(bytes,))
    if not ran:
        return 0
    if not 0 < len(signature) <= sigsize:
        return _sign_failed(job, ValueError(f"it returned {len(signature)} bytes, expected 1 to {sigsize}"))
    ffi.memmove(sig, signature, len(signature))
    siglen[0] = len(signature)
    return 1


_SIGN = "private_key_sign"


def _sign_failed(job: Job, exc: Exception) -> int:
    """Fail the handshake (internal_error) with *exc* as the signer's error, unless one is there already."""
    if job.exception is None:
        job.exception = exc
        job.failed_callback = _SIGN
    return 0
