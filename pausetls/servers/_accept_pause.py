"""Accepting without descriptors: pause, leave the clients in the kernel's backlog, retry.

When accept(2) fails for lack of descriptors (EMFILE, ENFILE) or of kernel memory, the
connection stays in the listener's queue; accepting again at once would spin, and accepting
to close would reset a client that could have been served a moment later.  So a server stops
accepting for `RETRY_INTERVAL` and tries again.  An episode (from the first failure until
the backlog is empty again) is one counter step in ``stats.accepts_paused`` and one log line.
Shared by `TLSServer` and `ThreadedTLSServer`; imports no event loop.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

from ._server_stats import ServerStats, peer

__all__ = ["RETRY_INTERVAL", "AcceptPause"]

log = logging.getLogger("pausetls.server")

#: seconds between accept attempts while out of descriptors
RETRY_INTERVAL = 0.1

_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class AcceptPause:
    """Whether a server's accept() is in an out-of-descriptors episode; counts and logs each one once."""

    __slots__ = ("_stats", "active")

    def __init__(self, stats: ServerStats) -> None:
        self._stats = stats
        self.active = False

    def failed(self, exc: OSError, listener: Any) -> bool:
        """True if accept() on *listener* (its address) failed for lack of descriptors: the caller
        retries after `RETRY_INTERVAL`."""
        if exc.errno not in _OUT_OF_DESCRIPTORS:
            return False
        if not self.active:
            self.active = True
            self._stats.add("accepts_paused")
            log.warning(
                "TLS accept paused: listener=%s reason=%s (%s); clients wait in the backlog, retrying every %s s",
                peer(listener),
                errno.errorcode.get(exc.errno or 0, exc.errno),
                os.strerror(exc.errno or 0),
                RETRY_INTERVAL,
            )
        return True

    def drained(self) -> None:
        """accept() found the backlog empty: the server has caught up, the episode (if any) is over."""
        self.active = False
