"""`ConnectionOptions`: what every server (gevent, threads, asyncio) sets on each connection it accepts."""

from __future__ import annotations

from typing import Any

from ..core.tls_socket import TLSSocket
from ._tcp import set_nodelay

__all__ = ["ConnectionOptions"]


class ConnectionOptions:
    """The servers' per-connection settings, as class attributes an instance or subclass may change."""

    #: on close after a fatal alert (or with the client's bytes unread): seconds and bytes to read and
    #: discard before closing, so the client reads the alert instead of a TCP reset (0: off)
    linger_timeout: float = 1.0
    linger_bytes: int = 64 * 1024
    #: TCP_NODELAY on accepted sockets (False: Nagle's algorithm, small records wait for an ACK)
    tcp_nodelay: bool = True

    def _set_accepted_options(self, sock: Any) -> None:
        """On an accepted socket, before its handshake."""
        if self.tcp_nodelay:
            set_nodelay(sock)

    def _set_linger(self, tls: TLSSocket) -> None:
        """On the accepted socket's `TLSSocket`."""
        tls.set_linger(self.linger_timeout, self.linger_bytes)
