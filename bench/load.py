"""A load process: stdlib ``ssl`` clients on one gevent loop, driven by JSON lines on stdin.

``{"cmd": "run", "port", "clients", "cell", "pki", "ramp", "per_client"}`` starts
the clients (replies ``started``); each connects, handshakes (TLS 1.3; in
resumed cells offering the session its last connection got), sends one
request, reads the response to its end and closes, then starts over.  With
``per_client`` each makes that many connections, then stops.
``{"cmd": "stop", "window": [a, b], "drain"}`` stops them, giving those in
flight *drain* seconds (None: waits until every client is done), and replies
``done`` with what completed, and the latencies of what completed inside the
window (clock: ``time.monotonic``, shared by every process of the machine).

The clients do not verify the server's certificate: that work is the
client's, not the server's, and skipping it keeps the load generator light.
They close with a reset (SO_LINGER 0) after the server's close, so no
TIME_WAIT sockets pile up on loopback ports.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import sys
import time
from array import array
from collections import Counter
from typing import Any

import gevent
import gevent.socket
import gevent.ssl
from gevent.event import Event
from gevent.os import make_nonblocking, nb_read

from bench.data_load import WORK

REQUEST = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"
IO_TIMEOUT = 180.0  # a queue of 10,000 handshakes on a slow mode is latency, not an error
RESET_ON_CLOSE = struct.pack("ii", 1, 0)
ERROR_PAUSE = 0.05  # a failing client does not spin against the server
MAX_SAMPLES = 5  # error messages kept, for the report


def client_context(cell: dict[str, Any], pki: dict[str, str]) -> ssl.SSLContext:
    ctx = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF  # a session stays resumable whatever way the server closes
    if cell["client_cert"]:
        ctx.load_cert_chain(pki["client_chain"], pki["client_key"])
    return ctx


class Clients:
    """The clients of one cell in this process, and what they measured."""

    def __init__(self, command: dict[str, Any]) -> None:
        self.address = ("127.0.0.1", int(command["port"]))
        self.context = client_context(command["cell"], command["pki"])
        self.resume = bool(command["cell"]["resumed"])
        self.work: str = command["cell"].get("work", "handshake")
        self.size = int(command["cell"].get("size", 0))
        self.units = 0.0  # data cells: what the clients finished (see bench.data_load)
        self.stopped = Event()  # idle connections wait for it
        self.per_client: int | None = command.get("per_client")
        self.stopping = False
        self.in_flight = 0
        self.ends = array("d")
        self.latencies = array("d")
        self.reused = array("b")
        self.error_times = array("d")
        self.errors: Counter[str] = Counter()
        self.samples: list[str] = []
        count, ramp = int(command["clients"]), float(command["ramp"])
        self.greenlets = [gevent.spawn_later(ramp * i / count, self.client) for i in range(count)]

    def client(self) -> None:
        if self.work != "handshake":
            self.data_client()
            return
        session = None
        made = 0
        while not self.stopping and (self.per_client is None or made < self.per_client):
            made += 1
            session = self.connect_once(session)

    def connect_once(self, session: ssl.SSLSession | None) -> ssl.SSLSession | None:
        started = time.monotonic()
        self.in_flight += 1
        try:
            with gevent.socket.create_connection(self.address, timeout=IO_TIMEOUT) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
                with self.context.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
                    tls.sendall(REQUEST)
                    while tls.recv(4096):
                        pass
                    ended = time.monotonic()
                    self.ends.append(ended)
                    self.latencies.append(ended - started)
                    self.reused.append(tls.session_reused)
                    return tls.session if self.resume else None
        except Exception as exc:  # noqa: BLE001 - counted and reported: a failure is a figure, not a crash
            self.error(exc)
            gevent.sleep(ERROR_PAUSE)
            return None
        finally:
            self.in_flight -= 1

    def data_client(self) -> None:
        """One kept connection doing the cell's work until the clients stop."""
        try:
            with gevent.socket.create_connection(self.address, timeout=IO_TIMEOUT) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self.context.wrap_socket(sock, server_hostname="localhost") as tls:
                    WORK[self.work](tls, self.size, lambda: self.stopping, self.done, self.stopped.wait)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            self.error(exc)

    def done(self, started: float, units: float) -> None:
        """A unit of data-cell work finished (bulk: a read, counted in GB, with no latency of its own)."""
        self.units += units
        if self.work != "bulk":
            ended = time.monotonic()
            self.ends.append(ended)
            self.latencies.append(ended - started)

    def error(self, exc: Exception) -> None:
        self.error_times.append(time.monotonic())
        self.errors[type(exc).__name__] += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"{type(exc).__name__}: {exc}")

    def stop(self, drain: float | None) -> int:
        """Start nothing new (unless *drain* is None: let each client finish its connections); give what
        is in flight *drain* seconds; returns how many were cut off."""
        self.stopping = drain is not None
        self.stopped.set()
        gevent.joinall(self.greenlets, timeout=drain)
        abandoned = self.in_flight
        gevent.killall(self.greenlets, block=True, timeout=5)
        return abandoned

    def report(self, window: tuple[float, float], abandoned: int) -> dict[str, Any]:
        start, end = window
        inside = [i for i, t in enumerate(self.ends) if start <= t <= end]
        return {
            "event": "done",
            "ok": len(self.ends),
            "units": self.units,
            "resumed": sum(self.reused),
            "errors": dict(self.errors),
            "error_samples": self.samples,
            "abandoned": abandoned,
            "window_ok": len(inside),
            "window_resumed": sum(self.reused[i] for i in inside if i < len(self.reused)),  # data cells: none
            "window_errors": sum(1 for t in self.error_times if start <= t <= end),
            "latencies": [self.latencies[i] for i in inside],
        }


def _reply(message: dict[str, Any]) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(1, data) :]


def _run(command: dict[str, Any], clients: Clients | None) -> Clients | None:
    if command["cmd"] == "run":
        clients = Clients(command)
        _reply({"event": "started"})
    elif command["cmd"] == "stop" and clients is not None:
        abandoned = clients.stop(command["drain"])
        start, end = command["window"]
        _reply(clients.report((start, end), abandoned))
        clients = None
    return clients


def main() -> None:
    make_nonblocking(0)
    buffer = b""
    clients: Clients | None = None
    while chunk := nb_read(0, 65536):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip() == b"exit":
                sys.exit(0)
            clients = _run(json.loads(line), clients)


if __name__ == "__main__":
    main()
