"""One benchmark server in a process of its own (every Python mode; nginx is `bench.nginx`).

Started by `bench.servers` with one JSON argument (the cell and the certificate
files).  Prints ``READY <port>``, then answers each line on stdin: ``stats``
with one JSON line of the server's own counters, ``exit`` by exiting.  A thread
reads stdin, so the server's loop (gevent's hub, or the accept thread) never
waits for the controller.

Every mode answers the same way: it reads the client's request (one record),
sends `RESPONSE` and closes with close_notify.  Latency is spent inside the
handshake by pausetls (a verify or session-get callback that sleeps) and, in
the stdlib anchor that cannot pause a callback, in the handler right after the
handshake.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pausetls
from bench.plan import PREFORK_WORKERS, THREAD_POOLS, Cell
from pausetls.stores import MemoryStore, store_from_url

RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
BACKLOG = 4096
HANDSHAKE_TIMEOUT = 120.0  # long enough for a queue of 10,000 clients: slowness shows as latency, not errors
STORE_TIMEOUT = 60.0  # the session get must wait out its sleep even on an overloaded loop


class SlowMemoryStore(MemoryStore):
    """An in-process store whose get first waits *delay* seconds, like a store across the network."""

    def __init__(self, delay: float, sleep: Callable[[float], Any]) -> None:
        super().__init__()
        self.delay = delay
        self._sleep = sleep

    def get(self, key: str) -> bytes | None:
        if self.delay:
            self._sleep(self.delay)
        return super().get(key)


def sleeping_verify(delay: float, sleep: Callable[[float], Any]) -> Callable[..., bool]:
    """A verify callback that waits *delay* seconds on the client's leaf, then keeps OpenSSL's verdict."""

    def verify(conn: Any, x509: Any, errnum: int, depth: int, ok: int) -> bool:
        if depth == 0 and delay:
            sleep(delay)
        return bool(ok)

    return verify


def pausetls_context(
    cell: Cell, pki: dict[str, str], sleep: Callable[[float], Any], store_url: str = ""
) -> pausetls.Context:
    ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(pki["server_chain"])
    ctx.use_privatekey_file(pki["server_key"])
    delay = cell.latency_ms / 1000
    if cell.client_cert:
        ctx.load_verify_locations(pki["ca"])
        callback = sleeping_verify(delay, sleep) if cell.callback == "verify" else None
        ctx.set_verify(pausetls.VERIFY_PEER | pausetls.VERIFY_FAIL_IF_NO_PEER_CERT, callback)
    if cell.callback == "session":
        ctx.set_session_cache(SlowMemoryStore(delay, sleep), timeout=STORE_TIMEOUT)
    elif cell.callback == "tickets":
        ctx.set_ticket_keys(pausetls.TicketKeys.generate())
    elif cell.callback == "memcached":
        ctx.set_session_cache(store_from_url(store_url, timeout=STORE_TIMEOUT), timeout=STORE_TIMEOUT)
    return ctx


def stdlib_context(cell: Cell, pki: dict[str, str]) -> ssl.SSLContext:
    import gevent.ssl

    ctx = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["server_chain"], pki["server_key"])
    if cell.client_cert:
        ctx.load_verify_locations(pki["ca"])
        ctx.verify_mode = ssl.CERT_REQUIRED
    if cell.resumed and cell.callback != "tickets":
        ctx.options |= ssl.OP_NO_TICKET  # stateful sessions in OpenSSL's cache, as the other modes keep them
    # with "tickets" OpenSSL's built-in tickets (one key per process): the floor gevent + stdlib ssl reaches
    return ctx


def answer(tls: Any, address: Any) -> None:
    """The handler of the pausetls modes (the server closes the connection after it)."""
    tls.recv(4096)
    tls.sendall(RESPONSE)


class StdlibAnchor:
    """gevent's `StreamServer` handing sockets to a stdlib `ssl.SSLContext`, with `TLSServer`'s counters."""

    def __init__(self, cell: Cell, pki: dict[str, str]) -> None:
        from gevent.pool import Pool
        from gevent.server import StreamServer

        self.context = stdlib_context(cell, pki)
        self.delay = cell.latency_ms / 1000
        self.stats = pausetls.ServerStats()
        self.waiting = 0  # connections spending their latency in the handler
        self.pool = Pool()
        self.server = StreamServer(_gevent_listener(), self.handle, spawn=self.pool)

    def handle(self, sock: Any, address: Any) -> None:
        import gevent

        self.stats.accepted += 1
        self.stats.handshaking += 1
        # unwrap() below waits for the client's close_notify: without NODELAY our own close_notify
        # would sit behind Nagle until the client's delayed ACK (40 ms per connection)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(sock, server_side=True)
        except (OSError, ValueError) as exc:
            self.stats.record_exception(address, exc)
            sock.close()
            return
        finally:
            self.stats.handshaking -= 1
        self.stats.record_completed(bool(tls.session_reused))
        try:
            tls.recv(4096)
            if self.delay:
                self.waiting += 1
                try:
                    gevent.sleep(self.delay)  # the callback's wait, after the handshake: stdlib cannot pause one
                finally:
                    self.waiting -= 1
            tls.sendall(RESPONSE)
            tls.unwrap()  # close_notify: without it OpenSSL drops the session from its cache
        except (OSError, ValueError):
            pass
        finally:
            tls.close()


def build(
    cell: Cell, pki: dict[str, str], store_url: str = ""
) -> tuple[Any, Callable[[], dict[str, int]], Callable[[], None]]:
    """(server, stats function, run-forever function) for *cell*'s mode."""
    if cell.is_data:
        import gevent

        from bench.data_server import build_data

        contexts = (pausetls_context(cell, pki, gevent.sleep), stdlib_context(cell, pki))
        server, data_stats = build_data(cell, *contexts, _gevent_listener(), HANDSHAKE_TIMEOUT)
        return server, data_stats, _run_hub
    if cell.mode in PREFORK_WORKERS:
        from bench.prefork_server import build_prefork

        return build_prefork(cell, pki, PREFORK_WORKERS[cell.mode])
    if cell.mode == "stdlib-gevent":
        anchor = StdlibAnchor(cell, pki)
        anchor.server.start()
        stats = lambda: {**anchor.stats.as_dict(), "greenlets": _alive(anchor.pool), "paused": anchor.waiting}  # noqa: E731
        return anchor.server, stats, _run_hub
    if cell.mode == "pausetls-gevent":
        import gevent

        context = pausetls_context(cell, pki, gevent.sleep, store_url)
        server = pausetls.TLSServer(_gevent_listener(), answer, context=context, handshake_timeout=HANDSHAKE_TIMEOUT)
        server.start()
        return (
            server,
            lambda: {**server.stats.as_dict(), "greenlets": _alive(server.pool), "paused": _paused()},
            _run_hub,
        )
    context = pausetls_context(cell, pki, time.sleep, store_url)
    threaded = pausetls.ThreadedTLSServer(
        ("127.0.0.1", 0),
        answer,
        context=context,
        handshake_timeout=HANDSHAKE_TIMEOUT,
        pool_size=THREAD_POOLS[cell.mode],
        backlog=BACKLOG,
    )
    threaded.start()
    return threaded, lambda: {**threaded.stats.as_dict(), "greenlets": 0, "paused": _paused()}, threading.Event().wait


def _alive(pool: Any) -> int:
    """Connection greenlets not finished (a finished one leaves the pool only a loop iteration later)."""
    return sum(1 for greenlet in list(pool) if not greenlet.dead)


def _paused() -> int:
    """Handshakes inside a callback now (paused there, or about to be)."""
    return pausetls.live_objects()["callbacks"]


def _gevent_listener() -> Any:
    from gevent.server import StreamServer

    return StreamServer.get_listener(("127.0.0.1", 0), backlog=BACKLOG, family=socket.AF_INET)


def _run_hub() -> None:
    import gevent

    gevent.wait()  # serves until the process exits


def _control(stats: Callable[[], dict[str, int]]) -> None:
    for line in sys.stdin.buffer:
        command = line.strip()
        if command == b"stats":
            os.write(1, json.dumps(stats()).encode() + b"\n")
        elif command == b"exit":
            break
    os._exit(0)  # the controller has read what it needs: no teardown to measure


def main() -> None:
    config = json.loads(sys.argv[1])
    cell = Cell(**config["cell"])
    server, stats, run = build(cell, config["pki"], config.get("store_url", ""))
    os.write(1, f"READY {server.server_port}\n".encode())
    threading.Thread(target=_control, args=(stats,), name="bench-control", daemon=True).start()
    run()


if __name__ == "__main__":
    main()
