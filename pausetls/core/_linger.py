"""Lingering close: let the peer read our last bytes (a fatal alert, close_notify) before the socket goes.

Closing a socket whose receive queue holds bytes we never read makes the kernel send a TCP reset
instead of a FIN, and the peer's kernel then drops what it had not yet handed to its application:
our alert included, so the client sees ECONNRESET instead of the reason.  What nginx and
``openssl s_server`` do instead: shut down writing (a FIN after our last byte), read and discard what
the peer still sends until it closes, for at most *timeout* seconds and *max_bytes* bytes, then close.
"""

from __future__ import annotations

import fcntl
import functools
import socket
import termios
import time
from array import array
from dataclasses import dataclass
from typing import Any

from ._driver import IOWaiter
from .errors import ClosedError, TimeoutError

__all__ = ["Linger", "has_unread_bytes", "linger", "linger_bound"]

_SCRATCH = 16384


@dataclass(frozen=True)
class Linger:
    """How long, and how much, a close waits for the peer to finish sending."""

    timeout: float = 1.0
    max_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.timeout < 0 or self.max_bytes < 0:
            raise ValueError(f"linger timeout and max_bytes must be >= 0, not {self.timeout!r}, {self.max_bytes!r}")

    @property
    def enabled(self) -> bool:
        return self.timeout > 0 and self.max_bytes > 0


@functools.lru_cache(maxsize=64)
def linger_bound(timeout: float, max_bytes: int) -> Linger:
    """The one (frozen) `Linger` for these bounds: a server's connections share it, none carries its own."""
    return Linger(timeout, max_bytes)


def has_unread_bytes(sock: Any) -> bool:
    """True if the peer sent bytes that nobody has read yet (closing now would reset the connection)."""
    queued = array("i", [0])
    try:  # FIONREAD (SIOCINQ): the kernel's count, with no exception when nothing is queued (every clean close)
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, queued)
    except OSError:  # the connection is gone already
        return False
    return queued[0] > 0


def linger(sock: Any, io: IOWaiter, bound: Linger) -> None:
    """Shut down writing, then read and discard until the peer closes or *bound* is reached.

    *sock* is non-blocking; *io* waits for it (a greenlet or a thread waits, never the loop).  Never
    raises for the connection's own troubles; a kill (``GreenletExit``) passes through.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return  # not connected any more: nothing to protect
    deadline = time.monotonic() + bound.timeout
    scratch = bytearray(min(_SCRATCH, bound.max_bytes))
    left = bound.max_bytes
    while left > 0:
        try:
            count = sock.recv_into(scratch, min(len(scratch), left))
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                io.wait_readable(remaining)
            except (TimeoutError, ClosedError):
                return
            continue
        except OSError:
            return
        if count == 0:
            return  # the peer closed: it has read everything we sent
        left -= count
