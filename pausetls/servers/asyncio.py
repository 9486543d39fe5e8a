"""pausetls for asyncio: a TLS server and client whose handshake hooks may be ``async def``.

``await start_server(cb, host, port, context=ctx)`` answers like
`asyncio.start_server`: *cb(reader, writer)* gets asyncio streams once the
handshake is done, and ``writer.get_extra_info("ssl_object")`` is the
`TLSSocket` (``getpeercert``, ``version``, ``cipher``, ``session_reused``).
``await open_connection(host, port, context=ctx)`` is the client.

Every hook (verify, SNI, client hello, certificate, OCSP, ALPN, session get)
may be ``async def`` or return an awaitable: the handshake pauses until it
completes while the loop serves everyone else.  The handshake deadline and
task cancellation fail closed: a paused callback fails, OpenSSL sends its
alert.  A failed handshake is one log line and a counter in ``server.stats``
(the same `ServerStats` as the gevent and threaded servers).  Needs no gevent;
works on the default loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..core.context import Context
from ..core.tls_socket import TLSSocket
from ..drivers._asyncio_transport import AsyncTLSConnection, TLSTransport
from ..drivers.asyncio import asyncio_driver, await_only, greenlet_spawn
from ._accept_pause import RETRY_INTERVAL, AcceptPause
from ._connection_options import ConnectionOptions
from ._server_stats import ServerStats, is_peer_failure, peer
from ._tcp import set_nodelay

__all__ = ["Server", "start_server", "open_connection", "await_only", "greenlet_spawn", "AsyncTLSConnection"]

log = logging.getLogger("pausetls.server")

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "Awaitable[None] | None"]

_STREAM_LIMIT = 2**16


def _extra(tls: TLSSocket, sock: socket.socket, peername: Any) -> dict[str, Any]:
    """What ``get_extra_info`` answers, as asyncio's SSL transports name it.

    *peername* is the address accept() or connect() gave: a peer that has already left makes
    ``getpeername`` fail, and that must not fail the connection's setup."""
    return {
        "ssl_object": tls,
        "sslcontext": tls.get_context(),
        "peercert": tls.getpeercert(),
        "cipher": tls.cipher(),
        "compression": None,
        "peername": peername,
        "sockname": sock.getsockname(),
        "socket": sock,
    }


def _streams(
    loop: asyncio.AbstractEventLoop, conn: AsyncTLSConnection, sock: socket.socket, peername: Any, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = TLSTransport(loop, conn, protocol, _extra(conn.tls, sock, peername))
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class Server(ConnectionOptions):
    """What `start_server` returns: `asyncio.Server`'s face over pausetls handshakes.

    ``close()`` stops listening and cancels handshakes in progress (paused ones fail closed);
    established connections stay open, as with `asyncio.Server`; ``wait_closed()`` waits for them.
    """

    def __init__(
        self,
        client_connected_cb: ClientConnected,
        sockets: list[socket.socket],
        *,
        context: Context,
        handshake_timeout: float | None = 30.0,
        max_handshakes: int | None = None,
        limit: int = _STREAM_LIMIT,
    ) -> None:
        context.bind_resumption(asyncio_driver)  # the session cache's deferred writes run as tasks on this loop
        self._loop = asyncio.get_running_loop()
        self._cb = client_connected_cb
        self._sockets = sockets
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self._limit = limit
        self.stats = ServerStats()
        self._slots = None if max_handshakes is None else asyncio.Semaphore(max_handshakes)
        self._accept_pause = AcceptPause(self.stats)
        self._acceptors: list[asyncio.Task[None]] = []
        self._handshakes: set[asyncio.Task[Any]] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._cancelled: list[asyncio.Task[Any]] = []  # what close() cancelled: wait_closed waits for it
        self._transports: set[TLSTransport] = set()  # established connections

    # -- asyncio.Server's face --------------------------------------------

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return bool(self._acceptors) and not self._closed.is_set()

    async def start_serving(self) -> None:
        if self._acceptors or self._closed.is_set():
            return
        for sock in self._sockets:
            self._acceptors.append(self._loop.create_task(self._accept_loop(sock)))

    async def serve_forever(self) -> None:
        await self.start_serving()
        try:
            await self._closed.wait()
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening; cancel every handshake in progress (a paused callback fails closed)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._cancelled = [*self._acceptors, *self._handshakes]
        for task in self._cancelled:
            task.cancel()  # an acceptor closes its listener as it ends
        if not self._acceptors:
            for sock in self._sockets:
                sock.close()

    def close_clients(self) -> None:
        """Close every established connection (buffered data is written, then close_notify)."""
        for transport in list(self._transports):
            transport.close()

    def abort_clients(self) -> None:
        """Close every established connection at once, dropping what is buffered."""
        for transport in list(self._transports):
            transport.abort()

    async def wait_closed(self) -> None:
        """Until the listeners have stopped and every connection is closed (as asyncio 3.12 does)."""
        await self._closed.wait()
        pending = [*self._cancelled, *self._connections]
        if pending:
            await asyncio.wait(pending)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    # -- accepting ---------------------------------------------------------

    async def _accept_loop(self, listener: socket.socket) -> None:
        try:
            await self._accept_until_closed(listener)
        finally:
            listener.close()  # here, after its reader is removed: never a stale descriptor in the loop

    async def _accept_until_closed(self, listener: socket.socket) -> None:
        while True:
            if self._slots is not None:
                await self._slots.acquire()  # at max_handshakes, clients wait in the kernel's backlog
            try:
                sock, address = await self._accept(listener)
            except OSError as exc:
                self._release_slot()
                if self._closed.is_set():
                    return
                if not self._accept_pause.failed(exc, listener.getsockname()):
                    log.info("TLS accept failed: listener=%s reason=%s", peer(listener.getsockname()), exc)
                # out of descriptors (clients wait in the backlog), or a connection lost before accept: retry
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            except BaseException:
                self._release_slot()
                raise
            self._set_accepted_options(sock)
            task = self._loop.create_task(self._serve(sock, address))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _accept(self, listener: socket.socket) -> tuple[socket.socket, Any]:
        """accept(), waiting for readability when the backlog is empty (which ends an out-of-descriptors
        episode, as under gevent and threads)."""
        while True:
            try:
                return listener.accept()
            except (BlockingIOError, InterruptedError):
                self._accept_pause.drained()
            fd = listener.fileno()
            readable = self._loop.create_future()
            self._loop.add_reader(fd, _settle, readable)
            try:
                await readable
            finally:
                self._loop.remove_reader(fd)

    def _connection_closed(self, transport: TLSTransport, address: Any) -> None:
        self._transports.discard(transport)
        error = transport.error
        if isinstance(error, Exception) and is_peer_failure(error):
            self.stats.record_connection_error(address, error)  # one line, one count, handler or not

    def _release_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()

    async def _serve(self, sock: socket.socket, address: Any) -> None:
        self.stats.accepted += 1
        try:
            sock.setblocking(True)  # TLSSocket takes its timeout (None: the handshake deadline bounds it) from it
            tls = TLSSocket(self.context, sock, server_side=True, driver=asyncio_driver)
        except BaseException:
            self._release_slot()
            sock.close()
            raise
        self._set_linger(tls)
        conn = AsyncTLSConnection(tls)
        established = False
        try:
            established = await self._handshake(conn, address)
            if established:
                await self._run_callback(conn, sock, address)
        finally:
            if self._closed.is_set():
                tls.set_linger(0)  # closing: no grace for a client we are leaving
            if not established:
                await conn.aclose()

    async def _handshake(self, conn: AsyncTLSConnection, address: Any) -> bool:
        """The handshake under the server's deadline; False (logged, counted) if it failed.

        The deadline and `close` cancel this task: a paused callback fails closed with its alert."""
        task = asyncio.current_task()
        assert task is not None
        self._handshakes.add(task)
        self.stats.handshaking += 1
        deadline = asyncio.timeout(self.handshake_timeout)
        try:
            async with deadline:
                await conn.do_handshake()
        except asyncio.CancelledError:
            self.stats.record_failure(address, "handshake cancelled (server stopping)", "handshakes_cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - any TLS, socket or callback failure ends this connection only
            if deadline.expired():
                self.stats.record_failure(address, "handshake timed out", "handshakes_timed_out")
            else:
                self.stats.record_exception(address, exc)
            return False
        finally:
            self.stats.handshaking -= 1
            self._handshakes.discard(task)
            self._release_slot()
        self.stats.record_completed(conn.tls.session_reused)
        return True

    async def _run_callback(self, conn: AsyncTLSConnection, sock: socket.socket, address: Any) -> None:
        reader, writer = _streams(self._loop, conn, sock, address, self._limit)
        transport = writer.transport
        assert isinstance(transport, TLSTransport)
        self._transports.add(transport)
        transport.closed.add_done_callback(lambda _done: self._connection_closed(transport, address))
        try:
            result = self._cb(reader, writer)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            if exc is transport.error:
                pass  # counted and logged as the connection closes
            elif is_peer_failure(exc):
                self.stats.record_connection_error(address, exc)
            else:
                log.exception("client_connected_cb failed: peer=%s", peer(address))
            writer.close()
        try:
            await asyncio.shield(transport.closed)  # the connection outlives the callback until closed
        except asyncio.CancelledError:
            transport.abort()  # the loop is ending: close it now (close_notify), then go
            await transport.closed
            raise


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _listening_sockets(infos: Iterable[tuple[Any, ...]], backlog: int, reuse_address: bool) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def start_server(
    client_connected_cb: ClientConnected,
    host: str | None = None,
    port: int = 0,
    *,
    context: Context,
    handshake_timeout: float | None = 30.0,
    max_handshakes: int | None = None,
    limit: int = _STREAM_LIMIT,
    backlog: int = 100,
    reuse_address: bool = True,
    start_serving: bool = True,
) -> Server:
    """Listen on *host* (None: every interface) and *port*; like `asyncio.start_server` with a pausetls context."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    unique = list(dict.fromkeys((info[0], info[1], info[2], "", info[4]) for info in infos))
    server = Server(
        client_connected_cb,
        _listening_sockets(unique, backlog, reuse_address),
        context=context,
        handshake_timeout=handshake_timeout,
        max_handshakes=max_handshakes,
        limit=limit,
    )
    if start_serving:
        await server.start_serving()
    return server


async def _connect(host: str, port: int) -> tuple[socket.socket, Any]:
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, kind, proto, _name, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock, address
    raise last or OSError(f"cannot resolve {host!r}")


async def open_connection(
    host: str,
    port: int,
    *,
    context: Context,
    server_hostname: str | None = None,
    session: Any = None,
    limit: int = _STREAM_LIMIT,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect and complete a TLS handshake whose client hooks (verify, OCSP) may be ``async def``.

    *server_hostname* (default: *host*) is sent as SNI and, when the context verifies, checked
    against the certificate.  *session* (a previous connection's ``ssl_object.get_session()``)
    is offered for resumption.
    """
    sock, peername = await _connect(host, port)
    try:
        set_nodelay(sock)
        sock.setblocking(True)  # no socket timeout: cancel the task or use asyncio.timeout
        tls = TLSSocket(
            context, sock, server_side=False, driver=asyncio_driver, server_hostname=server_hostname or host
        )
    except BaseException:
        sock.close()
        raise
    tls.peer_address = (host, port)  # the client session cache's key, as the caller named it
    conn = AsyncTLSConnection(tls)
    try:
        if session is not None:
            tls.set_session(session)
        await conn.do_handshake()
    except BaseException:
        await asyncio.shield(conn.aclose())
        raise
    return _streams(asyncio.get_running_loop(), conn, sock, peername, limit)
