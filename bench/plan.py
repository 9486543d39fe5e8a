"""What a benchmark run measures: the modes, the cells (one mode under one load) and the two profiles."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

CORES = os.cpu_count() or 1

# mode -> what it is, as the table says it
MODES: dict[str, str] = {
    "pausetls-gevent": "pausetls TLSServer (gevent)",
    "pausetls-threads": "pausetls ThreadedTLSServer, a thread per connection",
    "pausetls-pool64": "pausetls ThreadedTLSServer, pool of 64 threads",
    "pausetls-pool256": "pausetls ThreadedTLSServer, pool of 256 threads",
    "stdlib-gevent": "gevent StreamServer + stdlib ssl.SSLContext (anchor)",
    "nginx": "nginx, one worker (anchor)",
    "pausetls-gevent-xN": f"pausetls TLSServer (gevent) in {CORES} pre-fork worker processes, one per core",
}
PAUSETLS_MODES = ("pausetls-gevent", "pausetls-threads", "pausetls-pool64", "pausetls-pool256")
THREAD_POOLS = {"pausetls-threads": None, "pausetls-pool64": 64, "pausetls-pool256": 256}
ANCHORS = ("stdlib-gevent", "nginx")
PYTHON_MODES = (*PAUSETLS_MODES, "stdlib-gevent")  # one process each
PREFORK_WORKERS = {"pausetls-gevent-xN": CORES}  # the multi-core mode: as many workers as cores

# What one cell's connections do after the handshake.  "handshake": one request per connection (the
# handshake cells).  The data-path cells keep their connections: "echo" sends *size* bytes and reads
# them back, again and again; "bulk" reads what the server sends without end; "idle" makes one small
# echo and then waits; "http" sends keep-alive HTTP/1.1 requests (a WSGI app, or nginx's `return 200`).
WORKS = ("handshake", "echo", "bulk", "idle", "http")
DATA_MODES = ("pausetls-gevent", "stdlib-gevent")  # the modes that serve echo, bulk and idle
HTTP_MODES = ("pausetls-gevent", "stdlib-gevent", "nginx")  # WSGIServer, gevent.pywsgi + gevent.ssl, nginx
# what a data cell counts, as the tables name it (server CPU is per one of these)
UNITS = {"echo": "round trip", "bulk": "GB", "idle": "connection", "http": "request"}

# Where the latency of a cell comes from.  pausetls modes wait *inside* the handshake;
# the anchors cannot pause a callback, so stdlib-gevent waits in its handler right after
# the handshake (same wait per connection, outside the handshake); nginx runs only without one.
CALLBACKS = {
    "none": "no callback",
    "verify": "verify callback on the client leaf: sleeps the latency (gevent.sleep / time.sleep), then accepts",
    "session": "session-cache get: sleeps the latency, then reads an in-process MemoryStore",
    "tickets": "stateless session tickets under a `TicketKeys` ring (nginx: `ssl_session_ticket_key`, no cache; "
    "gevent + stdlib ssl: OpenSSL's built-in tickets, the floor of a gevent server without pausetls)",
    "memcached": "session cache in a real memcached on loopback (one get per resumption; OP_NO_TICKET)",
}
RESUMPTION_KINDS = ("tickets", "memcached")  # the resumption scenario: how a session comes back


@dataclass(frozen=True)
class Cell:
    """One mode under one load: *concurrency* clients, each connecting again as soon as it is done."""

    scenario: str
    mode: str
    concurrency: int
    latency_ms: int = 0
    client_cert: bool = False
    callback: str = "none"
    resumed: bool = False
    work: str = "handshake"
    size: int = 0  # echo: bytes per message; bulk: bytes per server write

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: known are {', '.join(MODES)}")
        if self.work not in WORKS:
            raise ValueError(f"unknown work {self.work!r}: known are {', '.join(WORKS)}")
        served = HTTP_MODES if self.work == "http" else DATA_MODES
        if self.work != "handshake" and self.mode not in served:
            raise ValueError(f"{self.mode} does not serve {self.work} cells: {', '.join(served)} do")
        if self.callback not in CALLBACKS:
            raise ValueError(f"unknown callback {self.callback!r}")
        if self.mode == "nginx" and self.latency_ms:
            raise ValueError("nginx has no callback to wait in: it runs at zero latency only")
        if self.mode == "nginx" and self.callback == "memcached":
            raise ValueError("nginx has no memcached session store")

    @property
    def is_data(self) -> bool:
        return self.work != "handshake"

    @property
    def key(self) -> str:
        if self.is_data:
            return f"{self.scenario}/{self.mode}/c{self.concurrency}/{self.work}{self.size or ''}"
        cert = "mtls" if self.client_cert else "tls"
        kind = "resumed" if self.resumed else "full"
        return f"{self.scenario}/{self.mode}/c{self.concurrency}/{self.latency_ms}ms/{cert}/{self.callback}/{kind}"

    def describe(self) -> str:
        if self.is_data:
            return f"{self.mode} c={self.concurrency} {self.work}" + (f" {self.size} B" if self.size else "")
        parts = [self.mode, f"c={self.concurrency}", f"{self.latency_ms} ms"]
        parts.append("client cert" if self.client_cert else "no client cert")
        parts.append(f"{self.callback} callback" if self.callback != "none" else "no callback")
        parts.append("resumed" if self.resumed else "full")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    cells: list[Cell]


@dataclass(frozen=True)
class Profile:
    name: str
    warmup_min: float  # seconds of load before the window, at least
    warmup_max: float  # ... and at most (the warmup waits for one handshake per client)
    window: float  # seconds measured
    drain: float  # seconds in-flight handshakes get to finish after the window
    quiet_wait: float = 0.0  # seconds a cell may wait for other processes on the machine to go quiet
    scenarios: list[Scenario] = field(default_factory=list)

    @property
    def cells(self) -> list[Cell]:
        return [cell for scenario in self.scenarios for cell in scenario.cells]


def _zero_latency(concurrency: int, modes: tuple[str, ...]) -> list[Scenario]:
    pausetls = [m for m in modes if m in PAUSETLS_MODES]
    return [
        Scenario(
            "crypto",
            "Full handshakes, zero latency, no client certificate",
            [Cell("crypto", m, concurrency) for m in modes],
        ),
        Scenario(
            "crypto-mtls",
            "Full handshakes, zero latency, client certificate (no callback)",
            [Cell("crypto-mtls", m, concurrency, client_cert=True) for m in modes],
        ),
        Scenario(
            "pause-overhead",
            "Full handshakes, zero latency, client certificate, a verify callback that returns at once",
            [Cell("pause-overhead", m, concurrency, client_cert=True, callback="verify") for m in pausetls],
        ),
    ]


def _waiting(name: str, title: str, loads: list[tuple[int, int]], modes: tuple[str, ...]) -> Scenario:
    """Full handshakes with a client certificate whose verify callback waits, for each (clients, ms)."""
    waiting = [m for m in modes if m != "nginx"]  # nginx has no callback to wait in
    return Scenario(name, title, [Cell(name, m, c, ms, True, "verify") for c, ms in loads for m in waiting])


def _concurrency(levels: tuple[int, ...], latency_ms: int, modes: tuple[str, ...]) -> Scenario:
    title = f"Full handshakes with a client certificate, verify callback latency {latency_ms} ms, by concurrency"
    return _waiting("concurrency", title, [(c, latency_ms) for c in levels], modes)


def _latency(concurrency: int, latencies: tuple[int, ...], modes: tuple[str, ...]) -> Scenario:
    title = f"Full handshakes with a client certificate, verify callback latency, {concurrency} clients"
    return _waiting("latency", title, [(concurrency, ms) for ms in latencies], modes)


def _resumed(concurrency: int, latencies: tuple[int, ...], modes: tuple[str, ...]) -> Scenario:
    cells = [
        Cell("resumed", m, concurrency, ms, callback="session", resumed=True)
        for ms in latencies
        for m in modes
        if m != "nginx" or ms == 0
    ]
    return Scenario("resumed", f"Resumed handshakes, session-cache get latency, {concurrency} clients", cells)


def _resumption(concurrency: int, modes: tuple[str, ...]) -> Scenario:
    """Server CPU per resumed handshake: stateless tickets against a memcached store, nginx with a ticket key,
    and gevent + stdlib ssl with OpenSSL's built-in tickets (what a gevent server pays without pausetls)."""
    cells = [
        Cell("resumption", m, concurrency, callback=kind, resumed=True)
        for m in modes
        if m in ("pausetls-gevent", "stdlib-gevent", "nginx")
        for kind in RESUMPTION_KINDS
        if m == "pausetls-gevent" or kind == "tickets"
    ]
    return Scenario(
        "resumption", f"Resumed handshakes: tickets against a memcached store, {concurrency} clients", cells
    )


HOLD_MS = 600_000  # the held scenario's callbacks outlast the cell: the server is killed first


def _held(levels: tuple[int, ...], modes: tuple[str, ...]) -> Scenario:
    title = "Memory with handshakes paused at once (client certificate, verify callback that does not return)"
    return _waiting("held", title, [(c, HOLD_MS) for c in levels], modes)


def _data(echo: tuple[int, int], bulk: int, idle: int, http: int, modes: tuple[str, ...]) -> list[Scenario]:
    """The data-path scenarios: *echo* = (clients at 1 KB, clients at 16 KB), then bulk, idle, http clients."""
    data = [m for m in modes if m in DATA_MODES]
    return [
        Scenario(
            "echo-1k",
            f"Echo round trips of 1 KB on {echo[0]} kept connections",
            [Cell("echo-1k", m, echo[0], work="echo", size=1024) for m in data],
        ),
        Scenario(
            "echo-16k",
            f"Echo round trips of 16 KB on {echo[1]} kept connections",
            [Cell("echo-16k", m, echo[1], work="echo", size=16384) for m in data],
        ),
        Scenario(
            "bulk",
            f"Bulk transfer, server to client, {bulk} connection(s), 64 KB writes",
            [Cell("bulk", m, bulk, work="bulk", size=65536) for m in data],
        ),
        Scenario(
            "idle",
            f"Memory of {idle} idle established connections (one 64-byte echo each, then the handler waits in "
            "recv(65536))",
            [Cell("idle", m, idle, work="idle", size=64) for m in data],
        ),
        Scenario(
            "http",
            f"Keep-alive HTTPS requests, {http} clients: pausetls WSGIServer, gevent.pywsgi + gevent.ssl, nginx "
            "`return 200`",
            [Cell("http", m, http, work="http") for m in modes if m in HTTP_MODES],
        ),
        Scenario(
            "http-latency",
            "Keep-alive HTTPS requests, one client (latency without a queue)",
            [Cell("http-latency", m, 1, work="http") for m in modes if m in HTTP_MODES],
        ),
    ]


def _one_process(modes: tuple[str, ...]) -> tuple[str, ...]:
    """The pre-fork modes run the concurrency sweep only (their session caches are per worker)."""
    return tuple(m for m in modes if m not in PREFORK_WORKERS)


def quick(modes: tuple[str, ...] = tuple(MODES)) -> Profile:
    """Smoke use: every mode, every kind of cell once, small and short (under 3 minutes)."""
    single = _one_process(modes)
    scenarios = _zero_latency(20, single)[:1]
    scenarios += [_concurrency((20, 200), 100, modes), _resumed(20, (10,), single), _resumption(20, single)]
    scenarios.append(_held((300,), single))
    scenarios += _data((20, 10), 1, 500, 20, single)
    return Profile("quick", warmup_min=0.3, warmup_max=5.0, window=1.0, drain=3.0, quiet_wait=0.0, scenarios=scenarios)


def full(modes: tuple[str, ...] = tuple(MODES)) -> Profile:
    """The published run (under 25 minutes).  A cell waits at most 5 s for other processes to go quiet: on a
    machine shared all the time a longer wait only lengthens the run (the cell is flagged either way)."""
    single = _one_process(modes)
    scenarios = _zero_latency(50, single)
    scenarios.append(_latency(100, (10,), single))
    scenarios.append(_concurrency((10, 100, 1000, 2000, 5000), 100, modes))
    scenarios.append(_resumed(100, (0, 10, 100), single))
    scenarios.append(_resumption(100, single))
    scenarios.append(_held((1000, 2000, 5000, 10000), single))
    scenarios += _data((200, 50), 1, 10000, 50, single)
    return Profile("full", warmup_min=1.0, warmup_max=25.0, window=4.0, drain=25.0, quiet_wait=5.0, scenarios=scenarios)


PROFILES = {"quick": quick, "full": full}
