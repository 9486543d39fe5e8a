"""pausetls: TLS for gevent servers where every handshake callback may pause.

The core (`Context`, `TLSSocket`, the job runtime in ``pausetls.core._job``)
knows no event loop; `TLSServer`, `WSGIServer` and `connect` drive it with
gevent, `ThreadedTLSServer` with OS threads.  Those are imported on first use,
so a program without gevent imports only what it runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .core import (
    _callbacks,  # noqa: F401 - registers the extern "Python" callbacks
    constants,
)
from .core._binding import openssl_version
from .core._job import Job, JobState, Paused, current_job, in_job, pause
from .core._live import live_objects
from .core.client_hello import ClientHello
from .core.client_session_cache import ClientSessionCache
from .core.constants import *  # noqa: F403 - pyOpenSSL-style module constants
from .core.context import NO_OVERLAPPING_PROTOCOLS, Context
from .core.errors import (
    Alert,
    CallbackError,
    CancelledError,
    ClosedError,
    ConnectionBusyError,
    Error,
    HandshakeError,
    MissingFileError,
    PauseError,
    SessionStoreError,
    SysCallError,
    TimeoutError,
    TLSError,
    TruncatedStreamError,
    VerificationError,
    WantReadError,
    WantWriteError,
    WantX509LookupError,
    ZeroReturnError,
)
from .core.session import Session
from .core.tls_socket import TLSSocket
from .sessions.stored_tickets import StoredTicketKeys
from .sessions.tickets import TicketKeys

if TYPE_CHECKING:
    from .drivers.gevent import GeventDriver, gevent_driver
    from .helpers.aia import AIAFetcher
    from .helpers.ondemand import OnDemandCertificates
    from .servers.client import client_context, connect
    from .servers.connection import Connection
    from .servers.gevent import ServerStats, TLSServer, WSGIServer
    from .servers.threaded import ThreadedTLSServer
    from .servers.wsgi_handler import WSGIHandler

# Names whose modules need a loop (gevent), or are a driver of their own: imported on first use, so
# ``import pausetls.threaded_server`` works where gevent is not installed.
_LAZY = {
    "AIAFetcher": "helpers.aia",
    "client_context": "servers.client",
    "connect": "servers.client",
    "Connection": "servers.connection",
    "GeventDriver": "drivers.gevent",
    "gevent_driver": "drivers.gevent",
    "OnDemandCertificates": "helpers.ondemand",
    "ServerStats": "servers._server_stats",
    "TLSServer": "servers.gevent",
    "WSGIServer": "servers.gevent",
    "ThreadedTLSServer": "servers.threaded",
    "WSGIHandler": "servers.wsgi_handler",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pausetls' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


__version__ = "0.1.0"

__all__ = [
    "AIAFetcher",
    "Alert",
    "ClientHello",
    "ClientSessionCache",
    "CallbackError",
    "CancelledError",
    "ClosedError",
    "Connection",
    "ConnectionBusyError",
    "Context",
    "Error",
    "GeventDriver",
    "HandshakeError",
    "Job",
    "NO_OVERLAPPING_PROTOCOLS",
    "OnDemandCertificates",
    "JobState",
    "MissingFileError",
    "PauseError",
    "Paused",
    "ServerStats",
    "Session",
    "SessionStoreError",
    "SysCallError",
    "StoredTicketKeys",
    "TicketKeys",
    "TLSError",
    "TLSServer",
    "TLSSocket",
    "ThreadedTLSServer",
    "TimeoutError",
    "TruncatedStreamError",
    "VerificationError",
    "WantReadError",
    "WantWriteError",
    "WantX509LookupError",
    "ZeroReturnError",
    "WSGIHandler",
    "WSGIServer",
    "client_context",
    "connect",
    "current_job",
    "gevent_driver",
    "in_job",
    "live_objects",
    "openssl_version",
    "pause",
]
__all__ += constants.__all__
