"""TCP options on the sockets pausetls accepts or opens."""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["set_nodelay"]


def set_nodelay(sock: Any, enabled: bool = True) -> None:
    """``TCP_NODELAY``: a TLS record goes out when written, not after the peer's delayed ACK (40 ms on Linux).

    A non-TCP socket (AF_UNIX) has no such option and is left alone, as is one the peer already reset.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))
    except OSError:
        pass  # the peer left already: its handshake reports that
