"""`Session`: a client's TLS session, kept to offer for resumption (pyOpenSSL's ``OpenSSL.SSL.Session``).

A session holds the master secret (TLS 1.3: the resumption secret): whoever
has its bytes can resume as this client, so `to_bytes` output and pickles
belong where the client's private key would go, never in a shared cache in
clear.
"""

from __future__ import annotations

import time
from typing import Any

from ._binding import drain_error_queue, ffi, lib
from .errors import Error

__all__ = ["Session", "session_der"]


def session_der(ptr: Any) -> bytes:
    """``i2d_SSL_SESSION`` of an ``SSL_SESSION *``."""
    length = lib.i2d_SSL_SESSION(ptr, ffi.NULL)
    buf = ffi.new("unsigned char[]", length)
    lib.i2d_SSL_SESSION(ptr, ffi.new("unsigned char **", buf))
    return bytes(ffi.buffer(buf, length))


class Session:
    """One reference to an ``SSL_SESSION``; freed with the object.  Pickles as its DER."""

    __slots__ = ("__weakref__", "_session")

    def __init__(self, ptr: Any) -> None:
        self._session = ffi.gc(ptr, lib.SSL_SESSION_free)

    @classmethod
    def from_bytes(cls, der: bytes) -> Session:
        """The session `to_bytes` wrote (``d2i_SSL_SESSION``); `Error` if *der* is not one."""
        lib.ERR_clear_error()
        data = ffi.from_buffer(der)
        ptr = lib.d2i_SSL_SESSION(ffi.NULL, ffi.new("const unsigned char **", data), len(data))
        if ptr == ffi.NULL:
            raise Error("not a DER-encoded TLS session", drain_error_queue())
        return cls(ptr)

    def to_bytes(self) -> bytes:
        """DER (``i2d_SSL_SESSION``): the session, its ticket and its master secret."""
        return session_der(self._session)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (Session.from_bytes, (self.to_bytes(),))

    @property
    def id(self) -> bytes:
        """The session id (TLS 1.2; for a TLS 1.3 or ticket session, one OpenSSL made up)."""
        length = ffi.new("unsigned int *")
        ptr = lib.SSL_SESSION_get_id(self._session, length)
        return bytes(ffi.buffer(ptr, length[0]))

    @property
    def protocol_version(self) -> int:
        """``TLS1_2_VERSION`` or ``TLS1_3_VERSION``."""
        return int(lib.SSL_SESSION_get_protocol_version(self._session))

    def has_ticket(self) -> bool:
        """True when the server gave a ticket (TLS 1.3 always; TLS 1.2 unless it resumes by id)."""
        return bool(lib.SSL_SESSION_has_ticket(self._session))

    def is_resumable(self) -> bool:
        """False once OpenSSL marked it not resumable (its connection ended without close_notify...)."""
        return bool(lib.SSL_SESSION_is_resumable(self._session))

    def expired(self, now: float | None = None) -> bool:
        """True past the lifetime the server gave it (the ticket lifetime hint, or the session timeout)."""
        end = int(lib.SSL_SESSION_get_time(self._session)) + int(lib.SSL_SESSION_get_timeout(self._session))
        return (time.time() if now is None else now) >= end

    def __repr__(self) -> str:
        return f"<Session id={self.id.hex()[:16]} version={self.protocol_version:#06x}>"
