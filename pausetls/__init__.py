"""pausetls: TLS for gevent servers where every handshake callback may pause.

The core (`Context`, `TLSSocket`, the job runtime in ``pausetls._job``)
knows no event loop; `TLSServer`, `WSGIServer` and `connect` drive it with
gevent, `ThreadedTLSServer` with OS threads.  Those are imported on first use,
so a program without gevent imports only what it runs.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import (
    _callbacks,  # noqa: F401 - registers the extern "Python" callbacks
    constants,
)
from ._binding import openssl_version
from ._job import Job, JobState, Paused, current_job, in_job, pause
from ._live import live_objects
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
from .tls_socket import TLSSocket

if TYPE_CHECKING:
    from .aia import AIAFetcher
    from .client import client_context, connect
    from .gevent_driver import GeventDriver, gevent_driver
    from .ondemand import OnDemandCertificates
    from .server import ServerStats, TLSServer, WSGIServer
    from .threaded_server import ThreadedTLSServer
    from .wsgi_handler import WSGIHandler

# Names whose modules need a loop (gevent), or are a driver of their own: imported on first use, so
# ``import pausetls.threaded_server`` works where gevent is not installed.
_LAZY = {
    "AIAFetcher": "aia",
    "client_context": "client",
    "connect": "client",
    "GeventDriver": "gevent_driver",
    "OnDemandCertificates": "ondemand",
    "ServerStats": "_server_stats",
    "TLSServer": "server",
    "WSGIServer": "server",
    "ThreadedTLSServer": "threaded_server",
    "WSGIHandler": "wsgi_handler",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pausetls' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


class _Package(types.ModuleType):
    """``pausetls.gevent_driver`` is the driver, not its module of the same name, which the import
    system binds on this package when anything imports it."""

    @property
    def gevent_driver(self) -> GeventDriver:
        return import_module(".gevent_driver", __name__).gevent_driver  # type: ignore[no-any-return]

    @gevent_driver.setter
    def gevent_driver(self, module: object) -> None:
        pass  # the submodule stays reachable as sys.modules["pausetls.gevent_driver"]


sys.modules[__name__].__class__ = _Package


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
