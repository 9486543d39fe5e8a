"""What a TLS server counts and logs about its handshakes.

Shared by `TLSServer` (gevent) and `ThreadedTLSServer` (OS threads), so both
count and log a failure the same way.  Imports no event loop.  Updates made
through the methods take a lock, because a threaded server's connections
update one `ServerStats` from many threads; on gevent it is never contended.
"""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any

from ..core.errors import CallbackError, TimeoutError, TLSError, VerificationError

__all__ = ["ServerStats", "describe_failure", "is_peer_failure", "peer"]

log = logging.getLogger("pausetls.server")


@dataclass
class ServerStats:
    """Counters a server keeps; read them as ``server.stats``."""

    accepted: int = 0
    handshakes_completed: int = 0
    handshakes_failed: int = 0
    handshakes_timed_out: int = 0
    handshakes_cancelled: int = 0
    verification_failures: int = 0
    callback_errors: int = 0
    #: established connections a TLS error ended (the peer's alert, a refused renegotiation, a bad record)
    connection_errors: int = 0
    #: established connections a TCP error ended under the handler (a reset, a write after the peer left)
    socket_errors: int = 0
    #: times accept() ran out of descriptors and accepting paused (the clients waited in the backlog)
    accepts_paused: int = 0
    resumed: int = 0
    refused: int = 0
    handshaking: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # not a field: as_dict() and comparisons ignore it

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, counter: str, amount: int = 1) -> None:
        """``counter += amount``, safe from any thread."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + amount)

    def record_completed(self, resumed: bool) -> None:
        with self._lock:
            self.handshakes_completed += 1
            self.resumed += resumed

    def record_failure(self, address: Any, reason: str, counter: str | None) -> None:
        """One failed handshake: one log line says why, then ``handshakes_failed`` and *counter* go up
        (in that order, so whoever sees the count, in another thread too, finds the line)."""
        log.info("TLS handshake failed: peer=%s reason=%s", peer(address), reason)
        with self._lock:
            self.handshakes_failed += 1
            if counter:
                setattr(self, counter, getattr(self, counter) + 1)

    def record_connection_error(self, address: Any, exc: Exception) -> None:
        """An established connection the peer broke (`is_peer_failure`) under the handler: one log line, counted."""
        log.info("TLS connection failed: peer=%s reason=%s: %s", peer(address), type(exc).__name__, exc)
        self.add("connection_errors" if isinstance(exc, TLSError) else "socket_errors")

    def record_exception(self, address: Any, exc: Exception) -> None:
        """A handshake that raised *exc* (a TLS, socket, callback or timeout error)."""
        self.record_failure(address, *describe_failure(exc))


def describe_failure(exc: Exception) -> tuple[str, str | None]:
    """The log reason and the `ServerStats` counter (or None) of a handshake that raised *exc*."""
    if isinstance(exc, CallbackError):
        return str(exc), "callback_errors"
    if isinstance(exc, VerificationError):
        return str(exc), "verification_failures"
    if isinstance(exc, TimeoutError):
        return "handshake timed out", "handshakes_timed_out"
    return f"{type(exc).__name__}: {exc}", None


# what TCP reports when the peer (or the path to it) is gone; EBADF (a socket closed here) is not among them
_PEER_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.ECONNABORTED,
        errno.ENOTCONN,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.EHOSTDOWN,
    }
)


def is_peer_failure(exc: BaseException) -> bool:
    """Whether *exc*, raised under a handler, means the peer broke the connection (TLS or TCP), not a bug."""
    return isinstance(exc, TLSError) or (isinstance(exc, OSError) and exc.errno in _PEER_ERRNOS)


def peer(address: Any) -> str:
    """``host:port`` of a peer address, IPv6 hosts in brackets."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in str(host) else f"{host}:{address[1]}"
    return str(address)
