"""`Connection`: pyOpenSSL's ``OpenSSL.SSL.Connection`` over a socket, so a pyOpenSSL script ports by its import.

``Connection(context, socket)`` wraps a socket that may not be connected yet;
``connect``/``accept``, or ``set_connect_state``/``set_accept_state`` and
``do_handshake``, start TLS.  What differs from `TLSSocket` is pyOpenSSL's:

* A read at the peer's close_notify raises `ZeroReturnError` (not ``b""``); a
  TCP close without it, or a socket error, raises `SysCallError`
  (`TruncatedStreamError`, with ``errno`` when the system gave one).
* A non-blocking socket (``setblocking(False)``) raises `WantReadError` /
  `WantWriteError` where OpenSSL needs the socket (``select`` loops); a
  blocking one waits, and every handshake callback may pause as usual.
* The driver follows the socket: a gevent socket (also a monkey-patched
  ``socket.socket``) waits on the gevent hub, a plain socket blocks its
  thread (the threads driver).
* ``set_tlsext_host_name`` only sends SNI, as in pyOpenSSL; the certificate's
  names are checked only by ``connect(..., server_hostname=)`` (or
  ``service_identity``, as with pyOpenSSL).
* Attributes it does not have come from the socket (``bind``, ``listen``,
  ``getsockname``...), as pyOpenSSL does.
"""

from __future__ import annotations

import errno
import sys
import warnings
from typing import Any

from ..core._binding import ffi, lib
from ..core._driver import Driver
from ..core.context import Context
from ..core.errors import ClosedError, SysCallError, ZeroReturnError
from ..core.tls_socket import TLSSocket
from ..drivers.threads import thread_driver

__all__ = ["Connection", "driver_for_socket"]


def driver_for_socket(sock: Any) -> Driver:
    """The gevent driver for a gevent socket, the threads driver for any other."""
    gevent_socket = sys.modules.get("gevent.socket")  # no gevent socket can exist unless gevent was imported
    if gevent_socket is not None and isinstance(sock, gevent_socket.socket):
        from ..drivers.gevent import gevent_driver

        return gevent_driver
    return thread_driver


class Connection(TLSSocket):
    """pyOpenSSL's ``Connection(context, socket)``; see the module docstring."""

    def __init__(self, context: Context, socket: Any = None) -> None:
        if socket is None:
            raise TypeError("pausetls.Connection needs a socket (pyOpenSSL's memory BIO mode is not supported)")
        super().__init__(
            context, socket, server_side=False, driver=driver_for_socket(socket), suppress_ragged_eofs=False
        )

    # -- which side -------------------------------------------------------

    def set_connect_state(self) -> None:
        """Be the client of the handshake to come."""
        self.server_side = False
        lib.SSL_set_connect_state(self._live_ssl())

    def set_accept_state(self) -> None:
        """Be the server of the handshake to come."""
        self.server_side = True
        lib.SSL_set_accept_state(self._live_ssl())

    def set_tlsext_host_name(self, name: bytes) -> None:
        """Client: send *name* as SNI (and key the context's client session cache by it)."""
        if not isinstance(name, bytes):
            raise TypeError("name must be a byte string")
        if b"\0" in name:
            raise TypeError("name must not contain NUL byte")
        self.server_hostname = name.decode("ascii", "replace")
        if not lib.SSL_set_tlsext_host_name(self._live_ssl(), name):
            raise ValueError(f"cannot send {name!r} as SNI")

    # -- the socket side, as pyOpenSSL does it ---------------------------

    def connect(self, address: Any) -> None:
        """Connect the socket to *address* (honouring its blocking mode) and become the client."""
        self.set_connect_state()
        if isinstance(address, tuple) and len(address) >= 2:
            self.peer_address = (str(address[0]), int(address[1]))
        sock = self._raw_sock
        sock.settimeout(self._timeout)  # the TCP connect waits as the caller asked; TLS then runs non-blocking
        try:
            sock.connect(address)
        finally:
            sock.setblocking(False)

    def connect_ex(self, address: Any) -> int:
        """`connect`, returning an errno instead of raising (``EINPROGRESS`` on a non-blocking socket)."""
        try:
            self.connect(address)
        except OSError as exc:
            return exc.errno or errno.EIO
        return 0

    def accept(self) -> tuple[Connection, Any]:
        """Accept a client on this listening socket: a new server-side Connection and its address.

        The new socket is blocking, as ``socket.accept`` makes it; the handshake runs at its first
        read or write (or ``do_handshake``)."""
        sock = self._raw_sock
        if sock is None:
            raise ClosedError()
        while True:
            try:
                client, address = sock.accept()
                break
            except BlockingIOError:
                if self._timeout == 0:
                    raise
                self._io.wait_readable(self._timeout)
        connection = Connection(self._context, client)
        connection.set_accept_state()
        return connection, address

    def __getattr__(self, name: str) -> Any:
        # only reached for names Connection lacks: the socket's (pyOpenSSL's behaviour)
        sock = self.__dict__.get("_raw_sock")
        if sock is None:
            raise AttributeError(f"'Connection' object has no attribute {name!r}")
        return getattr(sock, name)

    # -- pyOpenSSL's reads, writes and names ------------------------------

    def _end_of_stream(self) -> int:
        raise ZeroReturnError("the peer closed the TLS connection (close_notify)")

    def _failure(self, outcome: Any, during: str) -> BaseException:
        failure = super()._failure(outcome, during)
        if type(failure) is OSError:  # SSL_ERROR_SYSCALL with errno: pyOpenSSL's SysCallError carries it
            wrapped = SysCallError(f"{during}: {failure.strerror}")
            wrapped.errno = failure.errno
            return wrapped
        return failure

    def send(self, data: Any, flags: int = 0) -> int:
        return super().send(_bytes_and_warn(data), flags)

    write = send

    def sendall(self, data: Any, flags: int = 0) -> None:
        super().sendall(_bytes_and_warn(data), flags)

    def get_cipher_name(self) -> str | None:
        cipher = self.cipher()
        return None if cipher is None else cipher[0]

    def get_cipher_bits(self) -> int | None:
        cipher = self.cipher()
        return None if cipher is None else cipher[2]

    def get_cipher_version(self) -> str | None:
        cipher = self.cipher()
        return None if cipher is None else cipher[1]

    def get_protocol_version_name(self) -> str:
        """``"TLSv1.3"``, ``"TLSv1.2"``...  (OpenSSL's name; before the handshake, the method's)."""
        return str(ffi.string(lib.SSL_get_version(self._live_ssl())).decode())

    def get_protocol_version(self) -> int:
        """The protocol version number (``TLS1_3_VERSION``...)."""
        return int(lib.SSL_version(self._live_ssl()))

    def __repr__(self) -> str:
        return "<pausetls.Connection " + super().__repr__().removeprefix("<TLSSocket ")


def _bytes_and_warn(data: Any) -> Any:
    """pyOpenSSL still takes text for ``send``, with a DeprecationWarning: ported scripts do pass it."""
    if isinstance(data, str):
        warnings.warn("str for data is no longer accepted, use bytes", DeprecationWarning, stacklevel=3)
        return data.encode("utf-8")
    return data
