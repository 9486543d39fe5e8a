"""`connect()`: a gevent TLS client whose handshake callbacks may pause."""

from __future__ import annotations

from typing import Any

from gevent import socket as gsocket

from ..core.constants import TLS1_2_VERSION, TLS_CLIENT_METHOD, VERIFY_PEER
from ..core.context import Context
from ..core.session import Session
from ..core.tls_socket import TLSSocket
from ..drivers.gevent import gevent_driver
from ._tcp import set_nodelay

__all__ = ["connect", "client_context"]


def client_context(cafile: str | None = None) -> Context:
    """A client Context with safe defaults: verification on, TLS >= 1.2, system CAs or *cafile*."""
    context = Context(TLS_CLIENT_METHOD)
    context.set_min_proto_version(TLS1_2_VERSION)
    context.set_verify(VERIFY_PEER)
    if cafile is None:
        context.set_default_verify_paths()
    else:
        context.load_verify_locations(cafile)
    return context


def connect(
    address: tuple[str, int],
    context: Context | None = None,
    *,
    server_hostname: str | None = None,
    timeout: float | None = None,
    source_address: Any = None,
    suppress_ragged_eofs: bool = True,
    tcp_nodelay: bool = True,
    session: Session | None = None,
) -> TLSSocket:
    """Open a TCP connection to *address* and complete a TLS handshake.

    With *server_hostname* the client sends SNI and, when the context
    verifies, checks the certificate's names against it.  Without a context
    the default is `client_context()` (verification against the system CAs),
    and *server_hostname* defaults to the host of *address*.  ``TCP_NODELAY`` is on unless
    *tcp_nodelay* is False (with Nagle's algorithm, a small request may wait for the peer's ACK).

    *session* (a previous connection's ``tls.session``) is offered for resumption; without it, a
    context with `Context.set_client_session_cache` offers the one it holds for
    (host, port, server_hostname).  ``tls.session_reused`` tells whether the server took it.
    """
    if context is None:
        context = client_context()
        if server_hostname is None:
            server_hostname = address[0]
    sock = gsocket.create_connection(address, timeout=timeout, source_address=source_address)
    try:
        set_nodelay(sock, tcp_nodelay)
        tls = TLSSocket(
            context,
            sock,
            server_side=False,
            driver=gevent_driver,
            server_hostname=server_hostname,
            suppress_ragged_eofs=suppress_ragged_eofs,
        )
    except BaseException:
        sock.close()
        raise
    try:
        tls.peer_address = (address[0], address[1])  # the client session cache's key, as the caller named it
        if session is not None:
            tls.set_session(session)
        tls.do_handshake()
    except BaseException:
        tls.close()
        raise
    return tls
