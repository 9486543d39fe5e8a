"""`TLSServer`: gevent's `StreamServer` with a pausable TLS handshake in front of the handler."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer as _PyWSGIServer
from gevent.server import StreamServer

from ..core._job import CallbackCount
from ..core.context import Context
from ..core.tls_socket import TLSSocket
from ..drivers.gevent import gevent_driver
from ._accept_pause import RETRY_INTERVAL, AcceptPause
from ._connection_options import ConnectionOptions
from ._server_stats import ServerStats, is_peer_failure, peer
from ._ssl_args import TLSOptions, server_context
from .wsgi_handler import WSGIHandler

__all__ = ["TLSServer", "WSGIServer", "ServerStats"]

log = logging.getLogger("pausetls.server")

Handler = Callable[[TLSSocket, Any], Any]


class _HandshakeTimeout(gevent.Timeout):  # type: ignore[misc]
    """The server's own handshake deadline (distinct from any timeout a callback uses)."""


class TLSServer(ConnectionOptions, StreamServer):  # type: ignore[misc]
    """A gevent `StreamServer` whose ``handle(tls_socket, address)`` runs after a TLS handshake.

    The handshake runs in the connection's greenlet, so callbacks may block on
    gevent while every other connection goes on.  A failed handshake is one
    log line and a counter in `stats`, never an exception in the server.
    ``stop(timeout)`` cancels paused handshakes at once, then gives
    established connections *timeout* to finish before killing them (they are
    closed with close_notify).
    """

    #: seconds a client has to complete its handshake (callback pauses included)
    handshake_timeout: float | None = 30.0
    #: handshakes in progress at once (paused ones included); None: no limit
    max_handshakes: int | None = None
    #: callbacks of this server's handshakes running at once (paused handshakes); None: no limit
    max_paused: int | None = None
    #: at a limit: "backlog" stops accepting (clients wait in the kernel's accept queue),
    #: "refuse" accepts and closes at once
    overload: str = "backlog"

    def __init__(
        self,
        listener: Any,
        handle: Handler | None = None,
        context: Context | None = None,
        *,
        handshake_timeout: float | None = 30.0,
        max_handshakes: int | None = None,
        max_paused: int | None = None,
        overload: str = "backlog",
        backlog: int | None = None,
        spawn: Any = "default",
        ssl_context: Context | None = None,
        **ssl_args: Any,
    ) -> None:
        """*context* (or gevent's name, *ssl_context*) is a server `Context`; or gevent's ``ssl_args``
        (``certfile``, ``keyfile``, ``ca_certs``, ``cert_reqs``, ``ciphers``, ``server_side``,
        ``do_handshake_on_connect``, ``suppress_ragged_eofs``) build one, as ``StreamServer`` does."""
        tls = server_context("TLSServer", context, ssl_context, ssl_args)
        # a pool by default, so stop() can find and end every connection greenlet
        super().__init__(listener, handle=handle, backlog=backlog, spawn=Pool() if spawn == "default" else spawn)
        self._init_tls(tls, handshake_timeout, max_handshakes, max_paused, overload)

    def _init_tls(
        self,
        tls: tuple[Context, TLSOptions],
        handshake_timeout: float | None,
        max_handshakes: int | None = None,
        max_paused: int | None = None,
        overload: str = "backlog",
    ) -> None:
        if overload not in ("backlog", "refuse"):
            raise ValueError('overload is "backlog" or "refuse"')
        context, self.tls_options = tls
        context.bind_resumption(gevent_driver)  # the session cache's deferred writes run on this hub
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self.max_paused = max_paused
        self.overload = overload
        self.stats = ServerStats()
        self._callbacks = CallbackCount()  # this server's own: other servers and clients do not count
        self._handshaking: set[gevent.Greenlet] = set()
        self._slots = None if max_handshakes is None else BoundedSemaphore(max_handshakes)
        self._handshake_done = Event()
        self._accept_pause = AcceptPause(self.stats)

    def at_limit(self) -> bool:
        """True when another handshake would exceed `max_handshakes` or `max_paused`."""
        if self.max_handshakes is not None and self.stats.handshaking >= self.max_handshakes:
            return True
        return self.max_paused is not None and self._callbacks.running >= self.max_paused

    def _refused(self, sock: Any, address: Any) -> bool:
        """With ``overload="refuse"``: close a connection that arrives at a limit (counted, logged)."""
        if self.overload != "refuse" or not self.at_limit():
            return False
        self.stats.refused += 1
        log.info("TLS connection refused: peer=%s reason=at limit (%s)", peer(address), self._limits())
        sock.close()
        return True

    def _take_slot(self) -> bool:
        """With ``overload="backlog"``: stop accepting at a limit; a connection accepted in the same
        batch waits (under the handshake deadline) for a free slot.  Established connections go on.
        With ``overload="refuse"`` accepting never stops: a client beyond the limit is refused at once
        (`_refused`), not left in the backlog."""
        if self.overload == "refuse":
            return self._slots is not None and self._slots.acquire(blocking=False)
        if self._slots is not None:
            if self._slots.locked():
                self.stop_accepting()
            self._slots.acquire()
        while self.max_paused is not None and self._callbacks.running >= self.max_paused:
            self.stop_accepting()
            self._handshake_done.clear()
            self._handshake_done.wait()  # a paused count only falls as handshakes move on
        if self.at_limit():
            self.stop_accepting()
        return self._slots is not None

    def _handshake_ended(self, had_slot: bool) -> None:
        if had_slot and self._slots is not None:
            self._slots.release()
        self._handshake_done.set()
        if not self.closed and not self.at_limit():
            self.start_accepting()

    def _limits(self) -> str:
        paused = self._callbacks.running
        return f"handshakes {self.stats.handshaking}/{self.max_handshakes}, paused {paused}/{self.max_paused}"

    @property
    def ssl_enabled(self) -> bool:
        return True

    def init_socket(self) -> None:
        super().init_socket()
        self._handle = self._handshake_and_handle

    def do_read(self) -> Any:
        """Accept one connection; out of descriptors, pause accepting instead of reaching the hub."""
        try:
            accepted = super().do_read()
        except OSError as exc:
            if not self._accept_pause.failed(exc, self.address):
                raise
            # gevent's own retry would hand the error to the hub, which prints it on every attempt
            self.stop_accepting()
            self._timer = self.loop.timer(RETRY_INTERVAL)
            self._timer.start(self._start_accepting_if_started)
            return None
        if accepted is None:  # the backlog is empty
            self._accept_pause.drained()
        else:
            self._set_accepted_options(accepted[0])
        return accepted

    def _handshake_and_handle(self, sock: Any, address: Any) -> Any:
        self.stats.accepted += 1
        if self._refused(sock, address):
            return None
        tls = TLSSocket(
            self.context,
            sock,
            server_side=True,
            driver=gevent_driver,
            callback_count=self._callbacks,
            suppress_ragged_eofs=self.tls_options.suppress_ragged_eofs,
        )
        self._set_linger(tls)
        try:
            # do_handshake_on_connect=False (gevent's ssl_args): the handler's first read or write shakes hands
            if self.tls_options.do_handshake_on_connect and not self._handshake(tls, address):
                return None
            return self.handle(tls, address)
        except Exception as exc:
            if not is_peer_failure(exc):
                raise
            # the peer broke the connection (TLS or TCP) under the handler: it ends here, not in the hub
            self.stats.record_connection_error(address, exc)
            return None
        finally:
            if self.closed:
                tls.set_linger(0)  # stopping: no grace beyond stop()'s own timeout
            tls.close()

    def _handshake(self, tls: TLSSocket, address: Any) -> bool:
        """Run the handshake under the server's deadline; False (logged, counted) if it failed."""
        current = gevent.getcurrent()
        self._handshaking.add(current)
        self.stats.handshaking += 1
        timeout = _HandshakeTimeout(self.handshake_timeout)
        timeout.start()
        had_slot = False
        try:
            had_slot = self._take_slot()
            tls.do_handshake()
        except _HandshakeTimeout as exc:
            if exc is not timeout:
                raise
            self.stats.record_failure(address, "handshake timed out", "handshakes_timed_out")
            return False
        except gevent.GreenletExit:
            self.stats.record_failure(address, "handshake cancelled (server stopping)", "handshakes_cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - any TLS, socket or callback failure ends this connection only
            self.stats.record_exception(address, exc)
            return False
        finally:
            timeout.close()
            self.stats.handshaking -= 1
            self._handshaking.discard(current)
            self._handshake_ended(had_slot)
        self.stats.record_completed(tls.session_reused)
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting; cancel paused handshakes now; give the rest *timeout* seconds."""
        self.close()
        if self._handshaking:
            gevent.killall(list(self._handshaking), block=True, timeout=5)
        super().stop(timeout)


_PYWSGI_ARGS = frozenset(inspect.signature(_PyWSGIServer.__init__).parameters) - {"self", "ssl_args"}


class WSGIServer(TLSServer, _PyWSGIServer):  # type: ignore[misc]
    """``gevent.pywsgi.WSGIServer`` over pausetls: ``WSGIServer(listener, app, context=ctx)``, or with
    gevent's ``ssl_context=``/``certfile=``/``keyfile=``... as `TLSServer` takes them."""

    handler_class = WSGIHandler  # once stop() begins, keep-alive requests get Connection: close

    def __init__(
        self,
        listener: Any,
        application: Any = None,
        context: Context | None = None,
        *,
        handshake_timeout: float | None = 30.0,
        ssl_context: Context | None = None,
        **pywsgi_kwargs: Any,
    ) -> None:
        # what pywsgi does not name is gevent's ssl_args (pywsgi would hand those to StreamServer)
        ssl_args = {name: pywsgi_kwargs.pop(name) for name in set(pywsgi_kwargs) - _PYWSGI_ARGS}
        tls = server_context("WSGIServer", context, ssl_context, ssl_args)
        pywsgi_kwargs.setdefault("spawn", Pool())
        _PyWSGIServer.__init__(self, listener, application, **pywsgi_kwargs)
        self._init_tls(tls, handshake_timeout)
        self.environ["wsgi.url_scheme"] = "https"
