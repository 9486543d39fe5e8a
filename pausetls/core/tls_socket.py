"""`TLSSocket`: one TLS connection over a socket, driven by a `Driver`.

It speaks two dialects on one object: the parts of `ssl.SSLSocket` that
handlers and ``gevent.pywsgi`` use (``recv``/``sendall``/``makefile``/
``getpeercert``/...) and pyOpenSSL's ``Connection`` names
(``do_handshake``/``get_peer_certificate``/``set_context``/...), so the same
object is handed to callbacks as ``conn``.

One retry loop (`TLSSocket._retry`) drives every OpenSSL call: it runs the
call as a `Job` (which may pause inside a callback), and when OpenSSL answers
WANT_READ or WANT_WRITE it waits for the socket through the driver and calls
again with the same arguments.  That covers ``SSL_write`` wanting a read and
``SSL_read`` wanting a write (renegotiation, key update, post-handshake auth),
and retrying a write with the same buffer.  ``SSL_pending`` bytes are read
without waiting, because OpenSSL answers them without WANT_READ.

While a job is inside OpenSSL (maybe paused), the SSL object belongs to it:
any other call raises `ConnectionBusyError`, and ``close()`` from elsewhere
cancels the job and waits for the C call to unwind before freeing anything.
"""

from __future__ import annotations

import os
import socket as _socket
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar, overload

from cryptography import x509
from greenlet import getcurrent
from OpenSSL import crypto

from . import _live
from ._binding import ErrorEntry, drain_error_queue, ffi, lib
from ._certs import CertificateLike, PrivateKeyLike, peercert_dict, use_pkey, use_x509, x509_der, x509_to_pyopenssl
from ._driver import Driver
from ._job import CallbackCount, Job
from ._linger import has_unread_bytes, linger, linger_bound
from ._x509_names import names_of_stack, pyopenssl_name
from .context import Context, VerifyCallback
from .errors import (
    Alert,
    CallbackError,
    CancelledError,
    ClosedError,
    ConnectionBusyError,
    Error,
    HandshakeError,
    TimeoutError,
    TLSError,
    TruncatedStreamError,
    VerificationError,
    WantReadError,
    WantWriteError,
)
from .session import Session

__all__ = ["TLSSocket", "calling_connection", "connection_of"]


# the connection whose OpenSSL call the greenlet runs now: hooks that OpenSSL reaches without an SSL
# pointer (the remote-key provider's signer) find their connection, and its job, through it
_CALL_ATTRIBUTE = "_pausetls_tls_call"


def calling_connection() -> TLSSocket | None:
    """The connection whose OpenSSL call the calling greenlet is inside, or None."""
    conn: TLSSocket | None = getattr(getcurrent(), _CALL_ATTRIBUTE, None)
    return conn


_T = TypeVar("_T")
_EX_DATA_INDEX = 0  # the "app data" slot of SSL
_allocate = ffi.new_allocator(should_clear_after_alloc=False)
_OK, _WANT_READ, _WANT_WRITE = lib.SSL_ERROR_NONE, lib.SSL_ERROR_WANT_READ, lib.SSL_ERROR_WANT_WRITE
_ZERO_RETURN, _SYSCALL, _SSL = lib.SSL_ERROR_ZERO_RETURN, lib.SSL_ERROR_SYSCALL, lib.SSL_ERROR_SSL


def connection_of(ssl: Any) -> TLSSocket | None:
    """The TLSSocket that owns an ``SSL *`` (for callbacks)."""
    handle = lib.SSL_get_ex_data(ssl, _EX_DATA_INDEX)
    return None if handle == ffi.NULL else ffi.from_handle(handle)


def _free_ssl(ptr: Any) -> None:
    lib.SSL_free(ptr)
    _live.release("ssl")


class _Outcome:
    """What one finished OpenSSL call reported, read before anything else can touch the queue."""

    __slots__ = ("errno", "error", "queue", "ret")

    def __init__(self, ret: int, error: int, err_no: int, queue: list[ErrorEntry]) -> None:
        self.ret = ret
        self.error = error
        self.errno = err_no
        self.queue = queue

    def is_unexpected_eof(self) -> bool:
        if self.error == _SYSCALL and not self.queue and self.errno == 0:
            return True
        return any(
            lib.ERR_GET_LIB(e.code) == lib.ERR_LIB_SSL
            and lib.ERR_GET_REASON(e.code) == lib.SSL_R_UNEXPECTED_EOF_WHILE_READING
            for e in self.queue
        )


# SSL3_RT_MAX_PLAIN_LENGTH: without read pipelining (off) SSL_read_ex answers from one record, never more
_RECORD_PLAINTEXT = 16384
_DONE = _Outcome(1, _OK, 0, [])  # the answer of most calls: one object for all of them (read-only)
# ... and of a call that must wait (read-only too): no object per wait, none held by a waiting connection
_WANTS = {(ret, want): _Outcome(ret, want, 0, []) for ret in (0, -1) for want in (_WANT_READ, _WANT_WRITE)}


class TLSSocket:
    """A TLS connection over *sock*; not connected to the peer until `do_handshake`."""

    def __init__(
        self,
        context: Context,
        sock: Any,
        *,
        server_side: bool,
        driver: Driver,
        server_hostname: str | None = None,
        suppress_ragged_eofs: bool = True,
        callback_count: CallbackCount | None = None,
    ) -> None:
        self._context = context
        self.session_context = context  # keeps the session cache even if an SNI callback switches context
        # not `_sock`: gevent.pywsgi closes `socket._sock` directly, which would skip close_notify
        self._raw_sock = sock
        self.driver = driver  # every wait of this connection, and of its callbacks' pending results
        self._one_thread = driver.one_thread
        self.callback_count = callback_count  # a server's count of its connections' running callbacks
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self._timeout: float | None = sock.gettimeout()
        self.job: Job | None = None  # the job of the OpenSSL call in flight (maybe paused), once it has one
        self._in_call: Callable[..., int] | None = None  # the OpenSSL call in flight (maybe paused in a callback)
        self._closed = False
        self._close_after_job = False
        self._io_refs = 0
        self._verify_callback: VerifyCallback | None = None
        self._verify_chosen = False  # set_verify on this connection: set_context keeps it
        # the first error OpenSSL found in the peer's chain that the verify callback accepted anyway
        # (OpenSSL's own result then reads X509_V_OK): mod_ssl's SSL_CLIENT_VERIFY reports it
        self.verify_error_accepted: int | None = None
        self._app_data: Any = None
        self._nread = ffi.new("size_t *")
        self._nwritten = ffi.new("size_t *")
        self._write_lock = driver.lock()
        self._linger = linger_bound(0.0, 0)  # off unless set_linger: servers turn it on
        self._fatal_error = False  # OpenSSL failed this connection, and so queued a fatal alert
        self._handle = ffi.new_handle(self)
        self.handshake_done = False
        self.requested_server_name: str | None = None  # server: SNI of the ClientHello being processed
        # client: the (host, port) dialled, which keys the context's client session cache (else the peer's address)
        self.peer_address: tuple[str, int] | None = None
        self._session_chosen = False  # set_session was called: the cache offers nothing
        self._session_offered: Session | None = None  # what the cache offered to this handshake
        self._session_cache_consulted = False
        self._closed_session: Session | None = None  # a client's session, kept past close()
        self._closed_session_reused = False

        sock.setblocking(False)
        lib.ERR_clear_error()
        ptr = lib.SSL_new(context._ctx)
        if ptr == ffi.NULL:
            raise Error("SSL_new failed", drain_error_queue())
        _live.acquire("ssl")
        self._ssl: Any = ffi.gc(ptr, _free_ssl)
        lib.SSL_set_ex_data(self._ssl, _EX_DATA_INDEX, self._handle)
        if not lib.SSL_set_fd(self._ssl, sock.fileno()):
            self._free_ssl()
            raise Error("SSL_set_fd failed", drain_error_queue())
        self._io = driver.io_waiter(sock)
        _live.acquire("tls_sockets")
        if server_side:
            lib.SSL_set_accept_state(self._ssl)
        else:
            lib.SSL_set_connect_state(self._ssl)
            if server_hostname:
                self._set_server_hostname(server_hostname)
            if context.hooks.ocsp_client is not None:
                self.request_ocsp()  # a client that checks staples asks for them

    def _set_server_hostname(self, hostname: str) -> None:
        name = hostname.encode("idna")
        if not _is_ip_address(hostname):
            lib.SSL_set_tlsext_host_name(self._ssl, name)
        if self._context.get_verify_mode() & lib.SSL_VERIFY_PEER:
            # checked by OpenSSL during verification (X509_VERIFY_PARAM_set1_host)
            lib.SSL_set_hostflags(self._ssl, lib.X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS)
            if not lib.SSL_set1_host(self._ssl, name):
                raise Error(f"cannot check host name {hostname!r}", drain_error_queue())

    # -- the one retry loop ----------------------------------------------

    def _call(self, fn: Callable[..., int], *args: Any) -> _Outcome:
        """Run ``fn(ssl, *args)`` once as this connection's job; re-raise what its callbacks raised.

        The `Job` object itself is made only when a callback runs (`callback_job`), unless the driver
        lets other threads close the connection meanwhile: most reads and writes call back nothing.
        """
        if self._in_call is not None:
            raise ConnectionBusyError(
                "this TLS connection is inside an OpenSSL call started elsewhere (a paused callback); "
                "wait for it to finish"
            )
        ssl = self._ssl
        if ssl is None:
            raise ClosedError()
        self._in_call = fn
        if not self._one_thread:
            self.job = self._join_job(fn)
        caller = getcurrent()
        outer = getattr(caller, _CALL_ATTRIBUTE, None)  # a callback of another connection may call us
        setattr(caller, _CALL_ATTRIBUTE, self)
        try:
            lib.ERR_clear_error()  # nothing else can be trusted to leave the queue empty
            ret = fn(ssl, *args)
            if ret > 0:
                outcome = _DONE if ret == 1 else _Outcome(ret, _OK, 0, [])
            else:
                err_no = ffi.errno  # OpenSSL's answer is read before anything else can touch errno or the queue
                error = lib.SSL_get_error(ssl, ret)
                if error == _SSL:
                    self._fatal_error = True
                if error in (_SSL, _SYSCALL):
                    outcome = _Outcome(ret, error, err_no, drain_error_queue())
                else:  # WANT_READ, WANT_WRITE, ZERO_RETURN: nothing queued, errno meaningless
                    outcome = _WANTS.get((ret, error)) or _Outcome(ret, error, 0, [])
        finally:
            setattr(caller, _CALL_ATTRIBUTE, outer)
            # an exception raised below keeps this frame in its traceback, and a logged exception outlives
            # the call: under threads `caller` is the thread's main greenlet, which must not outlive its
            # thread (seen: the collector crashed on it, freed, in a traceback of a thread-driver test)
            del caller
            job, self.job = self.job, None
            self._in_call = None
            if job is not None:
                job.leave_joined()
            if self._close_after_job:
                self._real_close()
        if job is not None and job.exception is not None:
            _raise_from_callback(job)
        return outcome

    def callback_job(self) -> Job:
        """The job of the C call running the callback that asks (made now if the call had none yet);
        outside any call of ours, a job that runs callbacks but refuses to pause."""
        job = self.job
        if job is None:
            if self._in_call is None:
                return Job.refusing_pauses("out-of-job")
            job = self.job = self._join_job(self._in_call)
        return job

    def _join_job(self, fn: Callable[..., int]) -> Job:
        # the queue is not cleared: the call's own errors may be in it (`Job.run_callback` keeps them)
        return Job.joined(fn, self.driver.wait, owner=self, callbacks=self.callback_count, clear=False)

    def _retry(self, fn: Callable[..., int], *args: Any) -> _Outcome:
        """Call until OpenSSL stops asking for socket readiness; honours the socket timeout.

        A non-blocking socket (timeout 0) never waits: it raises `WantReadError` or
        `WantWriteError` (pyOpenSSL's answer; the caller retries when ``select`` says so).
        """
        deadline = self._deadline()
        while True:
            outcome = self._call(fn, *args)
            if not self._wait_for(outcome, deadline):
                return outcome

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _wait_for(self, outcome: _Outcome, deadline: float | None) -> bool:
        """Wait for the readiness *outcome* asks for; False if it asks for none (the call is over).
        A non-blocking socket raises `WantReadError`/`WantWriteError` instead of waiting."""
        if self._timeout == 0 and outcome.error in (_WANT_READ, _WANT_WRITE):
            if outcome.error == _WANT_READ:
                raise WantReadError("the TLS connection needs to read from the socket first")
            raise WantWriteError("the TLS connection needs to write to the socket first")
        if outcome.error == _WANT_READ:
            self._io.wait_readable(_remaining(deadline))
        elif outcome.error == _WANT_WRITE:
            self._io.wait_writable(_remaining(deadline))
        else:
            return False
        return True

    def _failure(self, outcome: _Outcome, during: str) -> BaseException:
        """The exception for a failed call: verification, truncation, OS error or TLS error."""
        if outcome.error == _SYSCALL and outcome.errno:
            return OSError(outcome.errno, f"{during}: {os.strerror(outcome.errno)}")
        if outcome.is_unexpected_eof():
            message = f"{during}: peer closed the connection without close_notify"
            if not self.handshake_done:
                return HandshakeError(message, outcome.queue)
            return TruncatedStreamError(message, outcome.queue)
        if outcome.error == _ZERO_RETURN:
            return HandshakeError(f"{during}: peer sent close_notify", outcome.queue)
        verify_result = lib.SSL_get_verify_result(self._ssl) if self._ssl is not None else 0
        if verify_result != lib.X509_V_OK and any(
            lib.ERR_GET_REASON(e.code) == lib.SSL_R_CERTIFICATE_VERIFY_FAILED for e in outcome.queue
        ):
            text = ffi.string(lib.X509_verify_cert_error_string(verify_result)).decode()
            return VerificationError(during, outcome.queue, int(verify_result), text)
        family = TLSError if self.handshake_done else HandshakeError
        return family(during, outcome.queue)

    # -- handshake -------------------------------------------------------

    def do_handshake(self) -> None:
        """Run (or finish) the handshake; callbacks inside may pause."""
        if not (self._session_cache_consulted or self.server_side):
            self._offer_cached_session()
        outcome = self._retry(lib.SSL_do_handshake)
        if outcome.error != _OK:
            raise self._failure(outcome, "handshake failed")
        self.handshake_done = True
        cache = self._context.client_session_cache
        if self._session_offered is not None and cache is not None:
            cache.record_outcome(self.session_reused)
            self._session_offered = None

    def _offer_cached_session(self) -> None:
        """Client, once, before its first handshake: offer a session from the context's client cache."""
        self._session_cache_consulted = True
        cache = self._context.client_session_cache
        key = None if cache is None or self._session_chosen else self.session_key()
        session = None if cache is None or key is None else cache.take(key)
        if session is not None:
            self.set_session(session)
            self._session_offered = session

    def session_key(self) -> tuple[str, int, str | None] | None:
        """Client: (host, port, server_hostname), where this connection's sessions may be offered again."""
        if self.server_side:
            return None
        address = self.peer_address
        if address is None:
            try:
                address = self._raw_sock.getpeername()
            except (AttributeError, OSError):
                return None  # not connected: nothing to key
        return (str(address[0]), int(address[1]), self.server_hostname)

    def renegotiate(self) -> bool:
        """TLS 1.2: schedule a renegotiation (sent by the next `do_handshake`, read or write)."""
        return bool(lib.SSL_renegotiate(self._live_ssl()))

    def renegotiate_pending(self) -> bool:
        return bool(lib.SSL_renegotiate_pending(self._live_ssl()))

    def verify_client_post_handshake(self) -> None:
        """TLS 1.3 server: request a client certificate now (the client must offer post-handshake auth)."""
        if not lib.SSL_verify_client_post_handshake(self._live_ssl()):
            raise TLSError("cannot request post-handshake authentication", drain_error_queue())

    def request_client_certificate(self, callback: VerifyCallback | None = None) -> None:
        """Ask an established client for a certificate: TLS 1.2 renegotiation or TLS 1.3 post-handshake auth.

        The request goes out at once; the certificate is processed (and
        *callback* runs, pausing as usual) inside the next read.
        """
        mode = lib.SSL_VERIFY_PEER | lib.SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        self.set_verify(mode, callback or self._verify_callback or self._context.get_verify_callback())
        if lib.SSL_version(self._live_ssl()) >= lib.TLS1_3_VERSION:
            self.verify_client_post_handshake()
        else:
            # a renegotiation that resumed the session would skip the CertificateRequest
            lib.SSL_set_options(self._live_ssl(), lib.SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION)
            if not self.renegotiate():
                raise TLSError("cannot start renegotiation", drain_error_queue())
        self.do_handshake()

    # -- reading ---------------------------------------------------------

    def _read_end(self, outcome: _Outcome) -> int:
        """What a read that OpenSSL answered without data means: 0 at the end of the stream, else raises."""
        if outcome.error == _ZERO_RETURN:
            return self._end_of_stream()
        if outcome.is_unexpected_eof() and self.suppress_ragged_eofs:
            return 0
        raise self._failure(outcome, "read failed")

    def _end_of_stream(self) -> int:
        """The peer's close_notify: a read of 0 bytes (`ssl.SSLSocket`'s answer)."""
        return 0

    def recv(self, bufsize: int = 1024, flags: int = 0) -> bytes:
        """Up to *bufsize* bytes; b"" at end of stream."""
        _no_flags(flags)
        if bufsize <= 0:
            return b""
        if not self.handshake_done:
            self.do_handshake()
        deadline = self._deadline()
        size = min(bufsize, _RECORD_PLAINTEXT)  # one SSL_read_ex returns one record's data at most
        while True:
            cbuf = _allocate("char[]", size)
            outcome = self._call(lib.SSL_read_ex, cbuf, size, self._nread)
            if outcome.error == _OK:
                return ffi.unpack(cbuf, self._nread[0])  # type: ignore[no-any-return]
            # not held while waiting: an idle connection blocked in recv(65536) keeps no buffer (the last
            # reference frees it: ffi.release cannot, the buffer lives inside the cdata object)
            del cbuf
            if not self._wait_for(outcome, deadline):
                self._read_end(outcome)  # raises, unless the stream ended
                return b""

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Read into *buffer* directly (no copy), up to *nbytes* (0: its size); 0 at end of stream."""
        _no_flags(flags)
        cbuf = ffi.from_buffer(buffer, require_writable=True)
        nbytes = nbytes or len(cbuf)
        if nbytes <= 0:
            return 0
        if not self.handshake_done:
            self.do_handshake()
        outcome = self._retry(lib.SSL_read_ex, cbuf, nbytes, self._nread)
        if outcome.error == _OK:
            return int(self._nread[0])
        return self._read_end(outcome)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # noqa: A002 - ssl.SSLSocket's name
        if buffer is not None:
            return self.recv_into(buffer, len)
        return self.recv(len)

    def pending(self) -> int:
        """Decrypted bytes OpenSSL holds that ``select`` cannot see."""
        return 0 if self._ssl is None else int(lib.SSL_pending(self._ssl))

    # -- writing ---------------------------------------------------------

    # One writer at a time: a write waiting to be retried must be retried with the same buffer, so a
    # second writer waits for the lock instead of calling SSL_write in between.  Readers do not take it.

    def send(self, data: Any, flags: int = 0) -> int:
        """Write all of *data* (OpenSSL writes whole buffers unless partial writes are on)."""
        _no_flags(flags)
        cbuf = ffi.from_buffer(data)
        with self._write_lock:
            return self._write(cbuf, len(cbuf))

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Write all of *data* before any other writer's."""
        _no_flags(flags)
        cbuf = ffi.from_buffer(data)  # no copy, and its length in bytes whatever the buffer's item size
        total = len(cbuf)
        with self._write_lock:
            sent = self._write(cbuf, total)
            while sent < total:  # only with partial writes on (SSL_MODE_ENABLE_PARTIAL_WRITE)
                sent += self._write(cbuf + sent, total - sent)

    def _write(self, cbuf: Any, size: int) -> int:
        if size == 0:
            return 0
        if not self.handshake_done:
            self.do_handshake()
        outcome = self._retry(lib.SSL_write_ex, cbuf, size, self._nwritten)
        if outcome.error != _OK:
            raise self._failure(outcome, "write failed")
        return int(self._nwritten[0])

    write = send

    # -- peer and session information -------------------------------------

    def get_peer_certificate(self) -> crypto.X509 | None:
        if self._ssl is None:
            return None
        ptr = lib.SSL_get1_peer_certificate(self._ssl)
        if ptr == ffi.NULL:
            return None
        try:
            return x509_to_pyopenssl(ptr)
        finally:
            lib.X509_free(ptr)

    def get_peer_cert_chain(self) -> list[crypto.X509] | None:
        if self._ssl is None:
            return None
        stack = lib.SSL_get_peer_cert_chain(self._ssl)
        if stack == ffi.NULL:
            return None
        return [x509_to_pyopenssl(lib.sk_X509_value(stack, i)) for i in range(lib.sk_X509_num(stack))]

    @overload
    def get_client_ca_list(self, *, as_cryptography: Literal[False] = False) -> list[crypto.X509Name]: ...

    @overload
    def get_client_ca_list(self, *, as_cryptography: Literal[True]) -> list[x509.Name]: ...

    def get_client_ca_list(self, *, as_cryptography: bool = False) -> list[crypto.X509Name] | list[x509.Name]:
        """The CAs named in the certificate request: on a server, those it sends (its context's
        list); on a client, those the server sent (empty until then).  pyOpenSSL's name."""
        ders = [] if self._ssl is None else names_of_stack(lib.SSL_get_client_CA_list(self._ssl))
        if as_cryptography:
            return [x509.Name.from_bytes(der) for der in ders]
        return [pyopenssl_name(der) for der in ders]

    def getpeercert(self, binary_form: bool = False) -> Any:
        """Like `ssl.SSLSocket.getpeercert`: DER, the decoded dict, {} if unverified, None if none."""
        if not self.handshake_done:
            raise ValueError("handshake not done yet")
        ptr = lib.SSL_get1_peer_certificate(self._ssl)
        if ptr == ffi.NULL:
            return None
        try:
            der = x509_der(ptr)
        finally:
            lib.X509_free(ptr)
        if binary_form:
            return der
        if not lib.SSL_get_verify_mode(self._ssl) & lib.SSL_VERIFY_PEER:
            return {}
        return peercert_dict(der)

    def cipher(self) -> tuple[str, str, int] | None:
        cipher = ffi.NULL if self._ssl is None else lib.SSL_get_current_cipher(self._ssl)
        if cipher == ffi.NULL:
            return None
        return (
            ffi.string(lib.SSL_CIPHER_get_name(cipher)).decode(),
            ffi.string(lib.SSL_CIPHER_get_version(cipher)).decode(),
            int(lib.SSL_CIPHER_get_bits(cipher, ffi.NULL)),
        )

    def version(self) -> str | None:
        if self._ssl is None or not self.handshake_done:
            return None
        return str(ffi.string(lib.SSL_get_version(self._ssl)).decode())

    def selected_alpn_protocol(self) -> str | None:
        if self._ssl is None:
            return None
        data, length = ffi.new("const unsigned char **"), ffi.new("unsigned int *")
        lib.SSL_get0_alpn_selected(self._ssl, data, length)
        return None if length[0] == 0 else bytes(ffi.buffer(data[0], length[0])).decode("ascii", "replace")

    def get_alpn_proto_negotiated(self) -> bytes:
        """pyOpenSSL's name: the negotiated protocol as bytes, b"" if none."""
        protocol = self.selected_alpn_protocol()
        return b"" if protocol is None else protocol.encode("ascii")

    def get_session(self) -> Session | None:
        """The session to offer on a later connection (`set_session`); None before a handshake.

        Under TLS 1.3 the server's tickets arrive after the handshake: read
        before asking (the session of a connection that read nothing yet
        cannot resume)."""
        if self._ssl is None:
            return self._closed_session
        ptr = lib.SSL_get1_session(self._ssl)
        return None if ptr == ffi.NULL else Session(ptr)

    def set_session(self, session: Session) -> None:
        """Client, before the handshake: offer *session* for resumption (instead of the cache's)."""
        if not isinstance(session, Session):
            raise TypeError(f"session must be a pausetls.Session, not {type(session).__name__}")
        if not lib.SSL_set_session(self._live_ssl(), session._session):
            raise Error("cannot set session", drain_error_queue())
        self._session_chosen = True

    @property
    def session(self) -> Session | None:
        """`ssl.SSLSocket`'s name for `get_session`; assign a `Session` before the handshake to offer it."""
        return self.get_session()

    @session.setter
    def session(self, session: Session) -> None:
        self.set_session(session)

    @property
    def session_reused(self) -> bool:
        """Did this handshake resume a session?  (Still answered after close.)"""
        if self._ssl is None:
            return self._closed_session_reused
        return bool(lib.SSL_session_reused(self._ssl))

    def master_key(self) -> bytes | None:
        """The session's master secret (TLS 1.3: resumption master secret); pyOpenSSL's name."""
        session = ffi.NULL if self._ssl is None else lib.SSL_get_session(self._ssl)
        if session == ffi.NULL:
            return None
        buf = ffi.new("unsigned char[]", 64)
        return bytes(ffi.buffer(buf, lib.SSL_SESSION_get_master_key(session, buf, 64)))

    def get_servername(self) -> bytes | None:
        """The SNI name the client sent (server) or will send (client)."""
        if self.server_side and self.requested_server_name is not None:
            # not SSL_get_servername: on a TLS 1.2 resumption that answers the session's name
            return self.requested_server_name.encode("ascii", "replace") or None
        name = ffi.NULL if self._ssl is None else lib.SSL_get_servername(self._ssl, 0)
        return None if name == ffi.NULL else ffi.string(name)

    def request_ocsp(self) -> None:
        """Client, before the handshake: ask the server to staple an OCSP response."""
        lib.SSL_set_tlsext_status_type(self._live_ssl(), lib.TLSEXT_STATUSTYPE_ocsp)

    def clear_certificates(self) -> None:
        """Drop this connection's certificates, keys and chains (copied from its context) before
        setting others: ``add_chain_certificate`` would otherwise extend the context's chain, and
        a default certificate of another key type would stay selectable."""
        lib.SSL_certs_clear(self._live_ssl())

    def use_certificate(self, cert: CertificateLike) -> None:
        """This connection's certificate (from a certificate or SNI callback)."""
        use_x509(cert, lambda ptr: lib.SSL_use_certificate(self._live_ssl(), ptr), "cannot use certificate")

    def add_chain_certificate(self, cert: CertificateLike) -> None:
        """An intermediate sent after this connection's certificate."""
        use_x509(cert, lambda ptr: lib.SSL_add1_chain_cert(self._live_ssl(), ptr), "cannot add chain certificate")

    def use_privatekey(self, pkey: PrivateKeyLike) -> None:
        use_pkey(pkey, lambda ptr: lib.SSL_use_PrivateKey(self._live_ssl(), ptr), "cannot use private key")

    def use_certificate_chain_file(self, path: str | bytes | os.PathLike[Any]) -> None:
        self._check(lib.SSL_use_certificate_chain_file(self._live_ssl(), os.fsencode(path)), f"cannot load {path!s}")

    @staticmethod
    def _check(ok: int, what: str) -> None:
        if ok <= 0:
            raise Error(what, drain_error_queue())

    def get_verify_result(self) -> int:
        return int(lib.SSL_get_verify_result(self._live_ssl()))

    # -- per-connection settings (pyOpenSSL Connection names) ---------------

    def get_context(self) -> Context:
        return self._context

    def set_context(self, context: Context) -> None:
        """Switch this connection to *context* (e.g. from an SNI callback).

        The context's client-certificate policy comes with it, as nginx does
        for its virtual hosts: its verify mode, depth and callback, unless
        this connection chose its own with `set_verify`.  (``SSL_set_SSL_CTX``
        alone keeps the first context's mode, so a virtual host requiring
        client certificates behind one that does not would never ask for one.)
        """
        ssl = self._live_ssl()
        lib.SSL_set_SSL_CTX(ssl, context._ctx)
        self._context = context
        if not self._verify_chosen:
            callback = ffi.NULL if context.get_verify_callback() is None else lib.pausetls_verify_cb
            lib.SSL_set_verify(ssl, context.get_verify_mode(), callback)
            lib.SSL_set_verify_depth(ssl, lib.SSL_CTX_get_verify_depth(context._ctx))

    def set_verify(self, mode: int, callback: VerifyCallback | None = None) -> None:
        self._verify_callback = callback
        self._verify_chosen = True
        lib.SSL_set_verify(self._live_ssl(), mode, ffi.NULL if callback is None else lib.pausetls_verify_cb)

    def verify_callback(self) -> VerifyCallback | None:
        """The verify callback in force: this connection's, else its context's."""
        return self._verify_callback or self._context.get_verify_callback()

    def set_app_data(self, data: Any) -> None:
        self._app_data = data

    def get_app_data(self) -> Any:
        return self._app_data

    # -- socket side -----------------------------------------------------

    def fileno(self) -> int:
        return int(self._raw_sock.fileno())

    def getpeername(self) -> Any:
        return self._raw_sock.getpeername()

    def getsockname(self) -> Any:
        return self._raw_sock.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self._raw_sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._raw_sock.getsockopt(*args)

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    @property
    def closed(self) -> bool:
        return self._closed

    def makefile(self, mode: str = "r", buffering: int | None = None, **kwargs: Any) -> Any:
        """A file object over this TLS socket, as `socket.socket.makefile` makes."""
        return _socket.socket.makefile(self, mode, buffering, **kwargs)  # type: ignore[call-overload]

    def _decref_socketios(self) -> None:
        # called by socket.SocketIO.close(); the real close waits for the last file
        self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._real_close()

    def _check_closed(self) -> None:
        if self._closed:
            raise ClosedError()

    def _live_ssl(self) -> Any:
        if self._ssl is None:
            raise ClosedError()
        return self._ssl

    @overload
    def shutdown(self) -> bool: ...

    @overload
    def shutdown(self, how: int) -> None: ...

    def shutdown(self, how: int | None = None) -> bool | None:
        """``shutdown(how)``: send close_notify when the write side closes, then shut the socket down
        (`ssl.SSLSocket`).  ``shutdown()``: send close_notify and return whether the peer's came
        already (pyOpenSSL); the socket stays open."""
        if how is None:
            outcome = self._retry(lib.SSL_shutdown)
            if outcome.ret < 0:
                raise self._failure(outcome, "shutdown failed")
            return outcome.ret == 1
        if how in (_socket.SHUT_WR, _socket.SHUT_RDWR):
            self._send_close_notify()
        self._raw_sock.shutdown(how)
        return None

    def unwrap(self) -> Any:
        """Exchange close_notify with the peer and return the plain socket."""
        outcome = self._retry(lib.SSL_shutdown)
        if outcome.ret == 0:  # ours is sent; wait for the peer's
            outcome = self._retry(lib.SSL_shutdown)
        if outcome.ret != 1:
            raise self._failure(outcome, "shutdown failed")
        if lib.SSL_has_pending(self._ssl):  # never lose the peer's plaintext silently
            raise TLSError("bytes after close_notify were read ahead: Context.set_read_ahead(False) for this protocol")
        sock = self._raw_sock
        self._detach()
        sock.settimeout(self._timeout)
        return sock

    def _send_close_notify(self) -> None:
        ssl = self._ssl
        if ssl is None or not self.handshake_done or self._in_call is not None:
            return
        if lib.SSL_get_shutdown(ssl) & lib.SSL_SENT_SHUTDOWN:
            return
        try:
            self._call(lib.SSL_shutdown)  # one try: never wait on a peer we are leaving
        except (Error, OSError):
            pass

    def close(self) -> None:
        """Close with close_notify; a job paused elsewhere is cancelled first."""
        if self._closed:
            return
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        job = self.job
        if job is None and self._in_call is not None:  # only our own call can run now (`Driver.one_thread`)
            self._close_after_job = True
            return
        if job is not None:
            if job.greenlet is getcurrent():
                self._close_after_job = True  # closing from inside our own callback
                return
            self.driver.cancel(job, CancelledError("connection closed while its handshake was paused"), None)
        self._closed = True
        self._send_close_notify()
        sock = self._raw_sock
        try:
            if sock is not None and self._must_linger(sock):
                self._io.close()  # whoever else waits on this connection is woken: it is closing
                waiter = self.driver.io_waiter(sock)
                try:
                    linger(sock, waiter, self._linger)
                finally:
                    waiter.close()
        finally:
            self._detach()
            if sock is not None:
                sock.close()

    def set_linger(self, timeout: float, max_bytes: int = 64 * 1024) -> None:
        """On close, after a fatal alert or with the peer's bytes unread: shut down writing and read and
        discard for up to *timeout* seconds and *max_bytes* bytes before closing, so the peer reads our
        last bytes instead of a TCP reset.  0 turns it off (the default)."""
        self._linger = linger_bound(timeout, max_bytes)

    def _must_linger(self, sock: Any) -> bool:
        """Only when we sent something the peer should read: an alert, or close_notify after data.
        A timed-out or cancelled handshake sent neither, so its peer gets no grace."""
        if not self._linger.enabled:
            return False
        return self._fatal_error or (self.handshake_done and has_unread_bytes(sock))

    def _detach(self) -> None:
        """Free the SSL object and the watchers; leave the socket to the caller."""
        if self._ssl is not None:
            self._free_ssl()
            self._io.close()
            _live.release("tls_sockets")
        self._raw_sock = None
        self._closed = True

    def _free_ssl(self) -> None:
        if self.handshake_done:
            self._closed_session_reused = self.session_reused
            if not self.server_side:
                self._closed_session = self.get_session()  # a client may still ask for it after close()
        ptr, self._ssl = self._ssl, None
        ffi.release(ptr)

    def __del__(self) -> None:
        # as `Context.__del__`: an SSL that outlives this object (freed later in the same garbage
        # cycle) must call back with no connection, not with a dead handle
        ssl = getattr(self, "_ssl", None)
        if ssl is not None:
            lib.SSL_set_ex_data(ssl, _EX_DATA_INDEX, ffi.NULL)

    def __enter__(self) -> TLSSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self.version() or "handshaking")
        side = "server" if self.server_side else "client"
        return f"<TLSSocket {side} fd={self._raw_sock.fileno() if self._raw_sock else -1} {state}>"


def _raise_from_callback(job: Job) -> None:
    exc = job.exception
    assert exc is not None
    if not isinstance(exc, Exception) or isinstance(exc, (Alert, VerificationError)):
        raise exc  # Timeout, GreenletExit, KeyboardInterrupt, alerts and verification failures pass as they are
    raise CallbackError(job.failed_callback or "unknown", exc) from exc


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _no_flags(flags: int) -> None:
    if flags:
        raise ValueError("flags are not supported on TLS sockets")


def _is_ip_address(host: str) -> bool:
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, host)
            return True
        except OSError:
            continue
    return False
