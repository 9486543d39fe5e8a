"""The exception hierarchy: one root, `pausetls.Error`, and families below it."""

from __future__ import annotations

import builtins
import errno

from ._binding import ErrorEntry

__all__ = [
    "Error",
    "TLSError",
    "HandshakeError",
    "VerificationError",
    "TruncatedStreamError",
    "CallbackError",
    "TimeoutError",
    "PauseError",
    "ConnectionBusyError",
    "CancelledError",
    "ClosedError",
    "Alert",
    "SessionStoreError",
]


class Error(Exception):
    """Root of every error pausetls raises.

    ``errors`` holds OpenSSL's error queue at the time of the failure as
    ``(library, reason)`` pairs, the same information pyOpenSSL gives.
    """

    def __init__(self, message: str, errors: list[ErrorEntry] | None = None) -> None:
        self.errors = [(e.library, e.reason) for e in errors or []]
        details = "; ".join(e.describe() for e in errors or [])
        super().__init__(f"{message}: {details}" if details else message)


class TLSError(Error):
    """OpenSSL reported a failure in the TLS protocol."""


class HandshakeError(TLSError):
    """The handshake failed."""


class VerificationError(HandshakeError):
    """The peer's certificate was rejected.

    ``verify_code`` is the X509_V_ERR_* number, ``verify_message`` its text.
    """

    def __init__(self, message: str, errors: list[ErrorEntry] | None, verify_code: int, verify_message: str) -> None:
        super().__init__(f"{message}: certificate verify failed: {verify_message} (X509_V_ERR {verify_code})", errors)
        self.verify_code = verify_code
        self.verify_message = verify_message


class TruncatedStreamError(TLSError, ConnectionError):
    """The peer closed the TCP connection without a TLS close_notify."""


class CallbackError(Error):
    """A user callback raised; ``__cause__`` is the original exception."""

    def __init__(self, callback: str, exc: BaseException) -> None:
        super().__init__(f"{callback} callback raised {type(exc).__name__}: {exc}")
        self.callback = callback


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - deliberately the builtin's name
    """A socket operation, handshake or callback ran past its time limit."""

    @classmethod
    def after(cls, seconds: float | None, what: str = "timed out") -> TimeoutError:
        """``what after N s``: one wording for a limit, so log lines read alike under every driver."""
        return cls(f"{what} after {seconds} s")


class PauseError(Error):
    """pause() was called where it cannot work: outside a job, or in a hook that must not pause."""


class ConnectionBusyError(Error):
    """The connection is inside an OpenSSL call (possibly paused) that another caller started."""


class CancelledError(Error):
    """The job was cancelled because its connection was closed elsewhere."""


class Alert(Error):
    """Raise from a handshake callback to fail the handshake with this TLS alert (``ALERT_*``).

    The alert goes to the peer; the same exception comes out of ``do_handshake()``.
    """

    def __init__(self, description: int, reason: str = "") -> None:
        self.description = description
        name = _ALERT_NAMES.get(description, f"alert {description}")
        super().__init__(f"handshake rejected with {name}" + (f": {reason}" if reason else ""))


_ALERT_NAMES = {
    40: "handshake_failure",
    42: "bad_certificate",
    49: "access_denied",
    80: "internal_error",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    120: "no_application_protocol",
}


class SessionStoreError(Error):
    """A session store failed (down, timed out, or answered something unusable)."""


class ClosedError(Error, OSError):
    """The TLS socket is closed (``errno`` is EBADF, as for a closed socket)."""

    def __init__(self, message: str = "TLS socket is closed") -> None:
        super().__init__(message)
        self.errno = errno.EBADF
