"""`ThreadedTLSServer`: `TLSServer`'s API on OS threads, for programs that do not run gevent.

One thread per connection, or a bounded pool (``pool_size``).  Handshakes run
with the thread driver: a callback blocks its own thread (``time.sleep``, a
blocking socket, ``Future.result()``) while the other threads go on.  Nothing
here imports gevent.

A thread cannot be interrupted and an ``SSL`` object must not be used by two
threads at once, so `stop` never calls into another thread's TLS connection.
It shuts down the raw socket of a handshake (the client sees the connection
end at once), and wakes the socket waits of an established connection with
`ClosedError` (what ``GreenletExit`` is to `TLSServer`'s handlers): the
owning thread then closes its own connection, with close_notify.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..core.context import Context
from ..core.errors import ClosedError
from ..core.tls_socket import TLSSocket
from ..drivers.threads import thread_driver
from ._accept_pause import RETRY_INTERVAL, AcceptPause
from ._connection_options import ConnectionOptions
from ._server_stats import ServerStats, is_peer_failure, peer
from ._ssl_args import server_context

__all__ = ["ThreadedTLSServer"]

log = logging.getLogger("pausetls.server")

Handler = Callable[[TLSSocket, Any], Any]

DEFAULT_BACKLOG = 256  # what gevent's StreamServer uses
_CLOSE_GRACE = 1.0  # seconds handlers get to close after their waits were woken


class ThreadedTLSServer(ConnectionOptions):
    """A TLS server whose ``handle(tls_socket, address)`` runs after the handshake, in a thread.

    Same constructor, handler, `stats` and ``start``/``serve_forever``/``stop``
    as `TLSServer`.  With *pool_size*, at most that many connections are served
    at once; the others wait, accepted, for a free thread (their handshake
    deadline starts when one takes them).  *listener* is an address or a
    listening socket.
    """

    #: seconds a client has to complete its handshake (time spent in callbacks included)
    handshake_timeout: float | None = 30.0
    #: seconds `stop` gives established connections when called without a timeout
    stop_timeout: float = 1.0

    def __init__(
        self,
        listener: Any,
        handle: Handler | None = None,
        context: Context | None = None,
        *,
        handshake_timeout: float | None = 30.0,
        pool_size: int | None = None,
        backlog: int | None = None,
        ssl_context: Context | None = None,
        **ssl_args: Any,
    ) -> None:
        """*context*/*ssl_context*/``ssl_args`` as `TLSServer` takes them (gevent's signature)."""
        context, self.tls_options = server_context("ThreadedTLSServer", context, ssl_context, ssl_args)
        if pool_size is not None and (isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1):
            raise ValueError(f"pool_size must be None (a thread per connection) or an int >= 1, not {pool_size!r}")
        context.bind_resumption(thread_driver)  # a cache bound to gevent would block these threads
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.pool_size = pool_size
        self.stats = ServerStats()
        self._accept_pause = AcceptPause(self.stats)
        self._handler: Handler = handle if handle is not None else self.handle
        self.socket: socket.socket | None = listener if hasattr(listener, "accept") else None
        self._listen_address: Any = listener if self.socket is None else self.socket.getsockname()
        self._backlog = backlog or DEFAULT_BACKLOG
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # raw socket -> its TLS socket once the handshake is done; what stop() may reach
        self._connections: dict[socket.socket, TLSSocket | None] = {}
        self._active = 0  # connections whose thread has not finished yet
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._acceptor: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._wake_r = self._wake_w = -1

    def handle(self, tls: TLSSocket, address: Any) -> Any:
        """Serve one connection after its handshake; give ``handle=`` or override this."""
        raise NotImplementedError("give ThreadedTLSServer a handle(tls_socket, address) function")

    # -- state -------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._acceptor is not None and not self._stopping.is_set()

    @property
    def closed(self) -> bool:
        return self._stopping.is_set()

    @property
    def address(self) -> Any:
        """The address listened on (with the port the system chose for port 0)."""
        return self._listen_address

    @property
    def server_host(self) -> str:
        return str(self.address[0])

    @property
    def server_port(self) -> int:
        return int(self.address[1])

    @property
    def ssl_enabled(self) -> bool:
        return True

    def __repr__(self) -> str:
        mode = "thread per connection" if self.pool_size is None else f"pool of {self.pool_size}"
        return f"<ThreadedTLSServer {peer(self.address)} {mode} active={self._active}>"

    # -- running -----------------------------------------------------------

    def start(self) -> None:
        """Listen (if given an address) and accept in a background thread; returns at once."""
        if self._acceptor is not None:
            raise RuntimeError("this server was already started")
        if self.socket is None:
            host = str(self._listen_address[0])
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.socket = socket.create_server(self._listen_address, family=family, backlog=self._backlog)
        self.socket.setblocking(False)  # readiness comes from poll(); accept() must never block
        self._listen_address = self.socket.getsockname()
        if self.pool_size is not None:
            self._pool = ThreadPoolExecutor(self.pool_size, thread_name_prefix="pausetls-connection")
        self._wake_r, self._wake_w = os.pipe()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"pausetls-accept:{self.server_port}", daemon=True
        )
        self._acceptor.start()

    def serve_forever(self, stop_timeout: float | None = None) -> None:
        """Start if needed and serve until `stop` is called (or Ctrl-C, which stops the server)."""
        if self._acceptor is None:
            self.start()
        try:
            self._stopped.wait()
        finally:
            self.stop(stop_timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting; cancel handshakes now; give established connections *timeout* seconds.

        Then their waits end with `ClosedError` (a handler blocked in a read
        or write gets it) and each thread closes its connection with
        close_notify; one second later whatever is left is cut.  Returns once
        every connection thread has finished, or after that second.
        """
        if self._stopping.is_set():
            self._stopped.wait()
            return
        self._stopping.set()
        self._close_listener()
        self._cut(established=False)  # handshakes, paused ones included
        if not self._wait_idle(self.stop_timeout if timeout is None else timeout):
            self._wake_handlers()
            if not self._wait_idle(_CLOSE_GRACE):
                self._cut(established=True)
                self._wait_idle(_CLOSE_GRACE)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self._stopped.set()

    def _close_listener(self) -> None:
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._acceptor is not None:
            self._acceptor.join()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self.socket is not None:
            self.socket.close()

    # Both under the lock: a connection leaves _connections before its thread closes it,
    # so nothing here reaches a closed connection or a descriptor the kernel has reused.

    def _cut(self, *, established: bool) -> None:
        """Shut down the raw sockets of handshakes (or of established connections): their waits end."""
        with self._lock:
            for sock, tls in self._connections.items():
                if (tls is not None) == established:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # already disconnected

    def _wake_handlers(self) -> None:
        """End the socket waits of established connections with `ClosedError`; OpenSSL is not touched."""
        with self._lock:
            for tls in self._connections.values():
                if tls is not None:
                    tls._io.close()

    def _wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    # -- accepting ---------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self.socket is not None
        poller = select.poll()
        poller.register(self.socket.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping.is_set():
            poller.poll()
            while not self._stopping.is_set():  # take the whole accept queue per wakeup
                try:
                    sock, address = self.socket.accept()
                except BlockingIOError:
                    self._accept_pause.drained()
                    break
                except OSError as exc:
                    if self._stopping.is_set():
                        return
                    if self._accept_pause.failed(exc, self._listen_address):
                        self._stopping.wait(RETRY_INTERVAL)  # the clients wait in the backlog meanwhile
                    else:
                        log.warning("accept failed: %s", exc)
                    break
                self._dispatch(sock, address)

    def _dispatch(self, sock: socket.socket, address: Any) -> None:
        self.stats.add("accepted")
        sock.setblocking(True)
        self._set_accepted_options(sock)
        with self._lock:
            self._connections[sock] = None
            self._active += 1
        try:
            if self._pool is not None:
                self._pool.submit(self._serve, sock, address)
            else:
                name = f"pausetls-connection:{peer(address)}"
                threading.Thread(target=self._serve, args=(sock, address), name=name, daemon=True).start()
        except RuntimeError as exc:  # no thread to be had (system limit reached)
            self.stats.add("refused")
            log.info("TLS connection refused: peer=%s reason=cannot start a thread: %s", peer(address), exc)
            self._release(sock)
            sock.close()
            self._finished()

    # -- one connection ----------------------------------------------------

    def _serve(self, sock: socket.socket, address: Any) -> None:
        try:
            if self._stopping.is_set():  # waited in the pool's queue while the server stopped
                self.stats.record_failure(address, "handshake cancelled (server stopping)", "handshakes_cancelled")
                self._release(sock)
                sock.close()
                return
            self._serve_tls(sock, address)
        finally:
            self._finished()

    def _serve_tls(self, sock: socket.socket, address: Any) -> None:
        try:
            tls = TLSSocket(
                self.context,
                sock,
                server_side=True,
                driver=thread_driver,
                suppress_ragged_eofs=self.tls_options.suppress_ragged_eofs,
            )
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory for an SSL object: this connection only
            self.stats.record_exception(address, exc)
            self._release(sock)
            sock.close()
            return
        self._set_linger(tls)
        try:
            if not self.tls_options.do_handshake_on_connect:
                # gevent's ssl_args: the handler's first read or write shakes hands; stop() treats it as established
                self._mark_established(sock, tls)
                self._handler(tls, address)
            elif self._handshake(tls, sock, address):
                self._handler(tls, address)
        except ClosedError:
            if not self._stopping.is_set():  # else stop() woke it: what GreenletExit is on gevent
                log.exception("handler failed: peer=%s", peer(address))
        except Exception as exc:
            if is_peer_failure(exc):  # the peer broke the connection (TLS or TCP), as TLSServer counts it
                self.stats.record_connection_error(address, exc)
            else:
                log.exception("handler failed: peer=%s", peer(address))  # its connection ends, never the server
        finally:
            self._release(sock)
            if self._stopping.is_set():
                tls.set_linger(0)  # stopping: no grace beyond stop()'s own timeout
            tls.close()

    def _handshake(self, tls: TLSSocket, sock: socket.socket, address: Any) -> bool:
        """Run the handshake under the server's deadline; False (logged, counted) if it failed."""
        self.stats.add("handshaking")
        tls.settimeout(self.handshake_timeout)  # one deadline for the whole handshake (see TLSSocket._retry)
        try:
            tls.do_handshake()
            if self._stopping.is_set():  # it went on after stop() cut it (a callback cannot be interrupted)
                raise ClosedError("server stopping")
        except Exception as exc:  # noqa: BLE001 - any TLS, socket or callback failure ends this connection only
            if self._stopping.is_set():
                self.stats.record_failure(address, "handshake cancelled (server stopping)", "handshakes_cancelled")
            else:
                self.stats.record_exception(address, exc)
            return False
        finally:
            self.stats.add("handshaking", -1)
        tls.settimeout(None)
        self._mark_established(sock, tls)
        self.stats.record_completed(tls.session_reused)
        return True

    def _mark_established(self, sock: socket.socket, tls: TLSSocket) -> None:
        """From now on `stop` gives this connection its timeout and wakes its waits (not a cut)."""
        with self._lock:
            if sock in self._connections:
                self._connections[sock] = tls

    def _release(self, sock: socket.socket) -> None:
        """Forget *sock* before it is closed, so `stop` never shuts down a reused descriptor."""
        with self._lock:
            self._connections.pop(sock, None)

    def _finished(self) -> None:
        with self._idle:
            self._active -= 1
            if self._active == 0:
                self._idle.notify_all()
