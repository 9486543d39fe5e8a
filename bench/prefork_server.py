"""The multi-core mode: `TLSServer` in N pre-fork workers (`pausetls.servers.prefork`) on one listener.

The parent binds the listener and makes the context before forking, as
``pausetls serve --workers N`` does; each worker serves the cell's handshakes
like ``pausetls-gevent``.  The workers' counters reach the harness through an
anonymous shared memory map (one row per worker, written after each
connection and every `PUBLISH_EVERY` seconds); the parent sums the rows.
"""

from __future__ import annotations

import mmap
import signal
import socket
import struct
from collections.abc import Callable
from typing import Any

import pausetls
from bench.plan import Cell

FIELDS = ("handshakes_completed", "handshaking", "resumed", "paused", "greenlets")
ROW = struct.Struct(f"={len(FIELDS)}q")
PUBLISH_EVERY = 0.05  # seconds: handshakes paused or in progress show up while they last


class SharedCounters:
    """One row of counters per worker in memory the workers share with the parent."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.memory = mmap.mmap(-1, ROW.size * workers)  # anonymous and shared: survives fork

    def publish(self, worker: int, values: dict[str, int]) -> None:
        ROW.pack_into(self.memory, worker * ROW.size, *(values.get(name, 0) for name in FIELDS))

    def total(self) -> dict[str, int]:
        rows = [ROW.unpack_from(self.memory, i * ROW.size) for i in range(self.workers)]
        return {name: sum(row[i] for row in rows) for i, name in enumerate(FIELDS)}


class PreforkServer:
    """What `bench.server` needs of a server: the port (the workers run once `run` is called)."""

    def __init__(self, cell: Cell, pki: dict[str, str], workers: int) -> None:
        import gevent
        from gevent.server import StreamServer

        from bench.server import BACKLOG, pausetls_context

        self.cell = cell
        self.workers = workers
        self.context = pausetls_context(cell, pki, gevent.sleep)
        self.listener = StreamServer.get_listener(("127.0.0.1", 0), backlog=BACKLOG, family=socket.AF_INET)
        self.server_port = self.listener.getsockname()[1]
        self.counters = SharedCounters(workers)

    def run(self) -> None:
        from pausetls.servers.prefork import run_workers

        run_workers(self.workers, self._serve, stop_timeout=1.0)

    def _serve(self, number: int, ready: Callable[[], None]) -> int:
        import gevent
        import gevent.event

        from bench.server import HANDSHAKE_TIMEOUT, _alive, _paused, answer

        server: pausetls.TLSServer

        def publish() -> None:
            stats = server.stats.as_dict()
            self.counters.publish(number, {**stats, "paused": _paused(), "greenlets": _alive(server.pool)})

        def handle(tls: Any, address: Any) -> None:
            try:
                answer(tls, address)
            finally:
                publish()

        def publish_often() -> None:
            while True:
                publish()
                gevent.sleep(PUBLISH_EVERY)

        server = pausetls.TLSServer(self.listener, handle, context=self.context, handshake_timeout=HANDSHAKE_TIMEOUT)
        server.start()
        gevent.spawn(publish_often)
        stopped = gevent.event.Event()
        gevent.signal_handler(signal.SIGTERM, stopped.set)
        ready()
        stopped.wait()
        server.stop(timeout=0.5)
        return 0


def build_prefork(
    cell: Cell, pki: dict[str, str], workers: int
) -> tuple[PreforkServer, Callable[[], dict[str, int]], Callable[[], None]]:
    """(server, stats function, run function) as `bench.server.build` answers."""
    server = PreforkServer(cell, pki, workers)
    return server, server.counters.total, server.run
