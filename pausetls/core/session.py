"""`Session`: a client's TLS session, kept to offer for resumption (pyOpenSSL's ``OpenSSL.SSL.Session``)."""

from __future__ import annotations

from typing import Any

from ._binding import ffi, lib

__all__ = ["Session"]


class Session:
    """One reference to an ``SSL_SESSION``; freed with the object."""

    __slots__ = ("_session",)

    def __init__(self, ptr: Any) -> None:
        self._session = ffi.gc(ptr, lib.SSL_SESSION_free)

    def is_resumable(self) -> bool:
        return bool(lib.SSL_SESSION_is_resumable(self._session))
