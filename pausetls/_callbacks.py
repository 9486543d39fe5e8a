"""The ``extern "Python"`` bodies: where OpenSSL calls back into pausetls.

Each one finds the `TLSSocket` behind the ``SSL *``, runs the user callback
through `Job.run_callback` (which may pause, keeps the error queue, catches
every exception) and turns the outcome into the value OpenSSL expects,
failing closed.  If a body itself raises, cffi returns 0 (``onerror``
logs it), which is the failure value of each of these callbacks.
"""

from __future__ import annotations

import logging
from typing import Any

from ._binding import ffi, lib
from ._certs import x509_to_pyopenssl
from ._job import Job
from .context import NO_OVERLAPPING_PROTOCOLS
from .tls_socket import TLSSocket, connection_of

log = logging.getLogger("pausetls")

_STORE_SSL_INDEX = lib.SSL_get_ex_data_X509_STORE_CTX_idx()
_ALPN_NOACK = 3  # SSL_TLSEXT_ERR_NOACK: go on without ALPN
_ALPN_ALERT_FATAL = 2  # SSL_TLSEXT_ERR_ALERT_FATAL: no_application_protocol
_ALPN_OK = 0


def _report(exc_type: Any, exc: BaseException, tb: Any) -> None:
    log.error("internal error in an OpenSSL callback", exc_info=(exc_type, exc, tb))


def _job_of(conn: TLSSocket) -> Job:
    """The job running the C call that invoked this callback.

    OpenSSL only calls back from inside a call the TLS socket made as a job;
    anything else gets a job that refuses to pause.
    """
    job = conn._job
    if job is None:
        job = Job(lambda: None)
        job._forbidden = "out-of-job"
    return job


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
    ran, accepted = _job_of(conn).run_callback("verify", True, callback, conn, cert, errnum, depth, preverify_ok)
    if ran and accepted:
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
    callback = None if conn is None else conn.get_context()._alpn_select_callback
    if conn is None or callback is None:
        return _ALPN_NOACK
    wire = ffi.buffer(inp, inlen)[:]
    offered = []
    while wire:
        offered.append(wire[1 : 1 + wire[0]])
        wire = wire[1 + wire[0] :]
    ran, chosen = _job_of(conn).run_callback("alpn_select", True, callback, conn, offered)
    if ran and (chosen is None or chosen is NO_OVERLAPPING_PROTOCOLS):
        return _ALPN_NOACK
    if not ran or chosen not in offered:
        return _ALPN_ALERT_FATAL
    # point into the client's own list, which outlives this call
    index = ffi.buffer(inp, inlen)[:].index(bytes([len(chosen)]) + chosen)
    out[0] = ffi.cast("const unsigned char *", inp) + index + 1
    outlen[0] = len(chosen)
    return _ALPN_OK
