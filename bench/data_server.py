"""The data-path servers of the benchmark: echo, bulk, idle and keep-alive HTTP (`bench.plan.WORKS`).

pausetls (`TLSServer`, `WSGIServer`) and the anchor (gevent's `StreamServer` or
`gevent.pywsgi.WSGIServer` over a stdlib ``ssl.SSLContext`` through ``gevent.ssl``)
run the same handler on the same certificate; the handler counts what it did in
`Work`, which the server reports as ``units`` (what the clients count too).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

import pausetls
from bench.plan import Cell

READ_SIZE = 65536  # what the handlers ask recv for: a typical server's read size (and the issue's)
Handler = Callable[[Any, Any], None]


class Work:
    """What the handlers of one server did (one gevent loop: no lock)."""

    def __init__(self, cell: Cell) -> None:
        self.cell = cell
        self.bytes = 0  # echoed (echo, idle) or sent (bulk)
        self.requests = 0  # http
        self.handlers = 0  # handlers running now: connections established and kept

    def units(self) -> float:
        """What the clients count: round trips (echo), GB (bulk), connections (idle), requests (http)."""
        work = self.cell.work
        if work == "http":
            return float(self.requests)
        if work == "bulk":
            return self.bytes / 2**30
        return self.bytes / self.cell.size  # echo and idle: every message is *size* bytes

    def handler(self) -> Handler:
        """The handler for this cell's work: ``handler(tls_socket, address)``."""
        serve = self._bulk if self.cell.work == "bulk" else self._echo

        def handle(tls: Any, address: Any) -> None:
            self.handlers += 1
            try:
                serve(tls)
            except (OSError, pausetls.Error):
                pass  # the client closes with a reset when the cell ends
            finally:
                self.handlers -= 1

        return handle

    def _echo(self, tls: Any) -> None:
        while data := tls.recv(READ_SIZE):
            tls.sendall(data)
            self.bytes += len(data)

    def _bulk(self, tls: Any) -> None:
        chunk = os.urandom(self.cell.size)
        tls.recv(READ_SIZE)  # the client's go
        while True:
            tls.sendall(chunk)
            self.bytes += len(chunk)

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI application of the http cells: nginx's ``return 200 "ok"``."""
        self.requests += 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]


def stdlib_handler(context: Any, handle: Handler, stats: pausetls.ServerStats) -> Handler:
    """gevent's `StreamServer` handler for the anchor: the handshake through ``gevent.ssl``, then *handle*."""

    def serve(sock: Any, address: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as TLSServer does by default
        try:
            tls = context.wrap_socket(sock, server_side=True)
        except (OSError, ValueError) as exc:
            stats.record_exception(address, exc)
            sock.close()
            return
        stats.record_completed(bool(tls.session_reused))
        try:
            handle(tls, address)
        finally:
            tls.close()

    return serve


def build_data(
    cell: Cell, pausetls_context: pausetls.Context, stdlib_context: Any, listener: Any, timeout: float
) -> tuple[Any, Callable[[], dict[str, Any]]]:
    """(started server, stats function) for a data cell in *cell*'s mode; *timeout*: the handshake's."""
    from gevent.pywsgi import WSGIServer as PyWSGIServer
    from gevent.server import StreamServer

    work = Work(cell)
    server: Any
    if cell.mode == "pausetls-gevent" and cell.work == "http":
        server = pausetls.WSGIServer(listener, work.app, context=pausetls_context, log=None, handshake_timeout=timeout)
    elif cell.mode == "pausetls-gevent":
        server = pausetls.TLSServer(listener, work.handler(), context=pausetls_context, handshake_timeout=timeout)
    elif cell.work == "http":
        server = PyWSGIServer(listener, work.app, ssl_context=stdlib_context, log=None)
        plain_wrap = server.wrap_socket_and_handle

        def wrap_socket_and_handle(sock: Any, address: Any) -> Any:
            # TCP_NODELAY, as TLSServer sets it by default: with Nagle, pywsgi's keep-alive responses
            # wait for the client's delayed ACK (~40 ms each), which would compare nothing but that
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return plain_wrap(sock, address)

        server.wrap_socket_and_handle = wrap_socket_and_handle
    else:
        anchor_stats = pausetls.ServerStats()
        server = StreamServer(listener, stdlib_handler(stdlib_context, work.handler(), anchor_stats))
        server.stats = anchor_stats
    server.start()

    def stats() -> dict[str, Any]:
        counters = server.stats.as_dict() if hasattr(server, "stats") else {"handshakes_completed": 0}
        return {**counters, "units": work.units(), "handshaking": work.handlers, "greenlets": 0, "paused": 0}

    return server, stats
