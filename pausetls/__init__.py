"""pausetls: TLS for gevent servers where every handshake callback may pause.

The core (`Context`, `TLSSocket`, the job runtime in ``pausetls._job``)
knows no event loop; `TLSServer`, `WSGIServer` and `connect` drive it with
gevent, `ThreadedTLSServer` with OS threads.
"""

from __future__ import annotations

from typing import Any

from . import (
    _callbacks,  # noqa: F401 - registers the extern "Python" callbacks
    constants,
)
from ._binding import openssl_version
from ._job import Job, JobState, Paused, current_job, in_job, pause
from ._live import live_objects
from ._server_stats import ServerStats
from .client_hello import ClientHello
from .constants import *  # noqa: F403 - pyOpenSSL-style module constants
from .context import NO_OVERLAPPING_PROTOCOLS, Context
from .errors import (
    Alert,
    CallbackError,
    CancelledError,
    ClosedError,
    ConnectionBusyError,
    Error,
    HandshakeError,
    PauseError,
    SessionStoreError,
    TimeoutError,
    TLSError,
    TruncatedStreamError,
    VerificationError,
)
from .threaded_server import ThreadedTLSServer
from .tls_socket import TLSSocket

Connection = TLSSocket  # pyOpenSSL's name for the per-connection object

__version__ = "0.1.0"

__all__ = [
    "AIAFetcher",
    "Alert",
    "ClientHello",
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
    "PauseError",
    "Paused",
    "ServerStats",
    "SessionStoreError",
    "TLSError",
    "TLSServer",
    "TLSSocket",
    "ThreadedTLSServer",
    "TimeoutError",
    "TruncatedStreamError",
    "VerificationError",
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

# The gevent parts: without gevent (missing, or blocked as ``sys.modules["gevent"] = None``) the core,
# ThreadedTLSServer and `pausetls.asyncio` still import; these names then raise a clear ImportError.
_GEVENT_NAMES = frozenset(
    {"AIAFetcher", "client_context", "connect", "GeventDriver", "gevent_driver", "OnDemandCertificates"}
    | {"TLSServer", "WSGIHandler", "WSGIServer"}
)
_gevent_missing: ImportError | None = None
try:
    from .aia import AIAFetcher
    from .client import client_context, connect
    from .gevent_driver import GeventDriver, gevent_driver
    from .ondemand import OnDemandCertificates
    from .server import TLSServer, WSGIServer
    from .wsgi_handler import WSGIHandler
except ImportError as exc:
    if (exc.name or "").partition(".")[0] != "gevent":
        raise
    _gevent_missing = exc


def __getattr__(name: str) -> Any:
    if name in _GEVENT_NAMES and _gevent_missing is not None:
        raise ImportError(f"pausetls.{name} needs gevent (pip install gevent)") from _gevent_missing
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
