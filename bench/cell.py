"""How one cell is measured: a fresh server, a warmup, a window, a drain.

The warmup lasts until every client has completed about one connection (so
the queue a closed loop builds is in place) or `Profile.warmup_max`.  In the
window the harness reads, at its two ends, the server's CPU time (from
``/proc``, all its threads) and the server's own count of completed
handshakes: their quotient is the server CPU per handshake.  Throughput and
latency come from the clients (completions inside the window); memory,
threads and greenlets are sampled all along.  After the window the clients
stop and drain, and the server's total count is compared with the clients'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import LoadGenerator
from bench.pki import BenchPKI
from bench.plan import UNITS, Cell, Profile
from bench.procstat import machine_busy_seconds, machine_task_seconds, sample_all
from bench.servers import ServerUnderTest, start_server

SAMPLE_EVERY = 0.2  # seconds between samples of memory, threads and the server's counters
HELD_STALL = 3.0  # seconds without one more paused handshake: as many as this mode will hold
IDLE_SETTLE = 1.0  # seconds between the last idle connection and the memory reading
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Bench:
    """What every cell of a run shares."""

    profile: Profile
    pki: BenchPKI
    load: LoadGenerator
    work_dir: Path
    nginx: str | None  # the nginx binary, or None when nginx is not run
    nofile: int  # RLIMIT_NOFILE, for nginx's worker_rlimit_nofile

    def start_server(self, cell: Cell) -> ServerUnderTest:
        return start_server(cell, self.pki, self.work_dir, self.nginx, self.nofile)

    def start_load(self, cell: Cell, port: int, per_client: int | None = None) -> None:
        self.load.start(cell, self.pki, port, ramp=min(2.0, cell.concurrency / 5000), per_client=per_client)


@dataclass(frozen=True)
class Snapshot:
    at: float
    server_cpu: float
    load_cpu: float
    machine_cpu: float
    foreign_cpu: float  # processes that are neither the server, the load nor the harness
    completed: float  # handshakes; in a data cell, its units (`bench.plan.UNITS`)


class Sampler:
    """Reads the server and the load processes; keeps the peaks."""

    def __init__(self, server: ServerUnderTest, load: LoadGenerator, counted: str = "handshakes_completed") -> None:
        self.server = server
        self.counted = counted  # the server's counter of completed work
        self.load = load
        self.idle_rss = sample_all(server.pids()).rss_bytes
        self.peak_rss = self.idle_rss
        self.peak_threads = 0
        self.peak_greenlets = 0
        self.peak_open = 0
        self.peak_paused = 0
        self.paused = 0
        self.completed: float = 0
        self.rss = self.idle_rss

    def sample(self) -> Snapshot:
        stats = self.server.stats()
        proc = sample_all(self.server.pids())
        load_cpu = sample_all(self.load.pids()).cpu_seconds
        self.peak_rss = max(self.peak_rss, proc.rss_bytes)
        self.peak_threads = max(self.peak_threads, proc.threads)
        self.peak_greenlets = max(self.peak_greenlets, stats.get("greenlets", 0))
        self.peak_open = max(self.peak_open, stats.get("handshaking", 0))
        self.paused = stats.get("paused", 0)
        self.peak_paused = max(self.peak_paused, self.paused)
        self.completed = stats[self.counted]
        self.rss = proc.rss_bytes
        foreign = machine_task_seconds() - proc.cpu_seconds - load_cpu - time.process_time()
        return Snapshot(time.monotonic(), proc.cpu_seconds, load_cpu, machine_busy_seconds(), foreign, self.completed)

    def run_until(self, done: Callable[[float], bool], show: Callable[[float], None]) -> Snapshot:
        started = time.monotonic()
        while True:
            snapshot = self.sample()
            elapsed = snapshot.at - started
            show(elapsed)
            if done(elapsed):
                return snapshot
            time.sleep(SAMPLE_EVERY)


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _window_figures(first: Snapshot, last: Snapshot, latencies: list[float]) -> dict[str, Any]:
    """Latency percentiles and CPU shares over the window from *first* to *last*."""
    window = last.at - first.at
    return {
        "p50_ms": None if not latencies else 1000 * (_percentile(latencies, 0.50) or 0),
        "p99_ms": None if not latencies else 1000 * (_percentile(latencies, 0.99) or 0),
        "server_cpu_pct": 100 * (last.server_cpu - first.server_cpu) / window,
        "load_cpu_pct": 100 * (last.load_cpu - first.load_cpu) / window,
        # everything the machine did: server, load, the kernel's loopback work, the harness, anyone else
        "machine_cpu_pct": 100 * (last.machine_cpu - first.machine_cpu) / window,
        "foreign_cpu_pct": 100 * (last.foreign_cpu - first.foreign_cpu) / window,
    }


@dataclass(frozen=True)
class Run:
    """One cell's load from warmup to drain: the samples at the window's ends, after the drain, and the clients'."""

    sampler: Sampler
    first: Snapshot
    last: Snapshot
    final: Snapshot
    clients: dict[str, Any]


def run_window(cell: Cell, bench: Bench, progress: Progress, counted: str, target: float) -> Run:
    """A fresh server under *cell*'s load: warm up until its *counted* counter reaches *target* (within the
    profile's bounds), measure a window, stop the clients and drain."""
    profile, load = bench.profile, bench.load
    server = bench.start_server(cell)
    try:
        sampler = Sampler(server, load, counted)
        bench.start_load(cell, server.port)

        def warm(elapsed: float) -> bool:
            if elapsed >= profile.warmup_max:
                return True
            return elapsed >= profile.warmup_min and sampler.completed >= target

        def show_warmup(elapsed: float) -> None:
            progress(f"warmup {elapsed:4.1f}s, {sampler.completed:.0f}/{target:.0f} {counted}")

        first = sampler.run_until(warm, show_warmup)
        last = sampler.run_until(
            lambda elapsed: elapsed >= profile.window,
            lambda elapsed: progress(f"measuring {elapsed:3.1f}/{profile.window:.0f}s"),
        )
        progress("draining")
        clients = load.stop((first.at, last.at), profile.drain)
        final = sampler.sample()
    finally:
        server.stop()
    return Run(sampler, first, last, final, clients)


def measure(cell: Cell, bench: Bench, progress: Progress) -> dict[str, Any]:
    """Every figure of one cell (see `bench.report` for what each means)."""
    run = run_window(cell, bench, progress, "handshakes_completed", max(cell.concurrency, 10))
    sampler, first, last, final, clients = run.sampler, run.first, run.last, run.final, run.clients
    return _figures(cell, sampler, first, last, final, clients)


def _figures(
    cell: Cell, sampler: Sampler, first: Snapshot, last: Snapshot, final: Snapshot, clients: dict[str, Any]
) -> dict[str, Any]:
    window = last.at - first.at
    handshakes = last.completed - first.completed
    latencies = clients["latencies"]
    growth = sampler.peak_rss - sampler.idle_rss
    errors = sum(clients["errors"].values())
    mismatch = final.completed - clients["ok"]
    return {
        "cell": cell.as_dict(),
        "key": cell.key,
        "window_s": window,
        "handshakes_per_s": clients["window_ok"] / window,
        "server_handshakes_per_s": handshakes / window,
        "server_cpu_us_per_handshake": 1e6 * (last.server_cpu - first.server_cpu) / handshakes if handshakes else None,
        **_window_figures(first, last, latencies),
        "idle_rss_mib": sampler.idle_rss / 2**20,
        "peak_rss_mib": sampler.peak_rss / 2**20,
        "rss_growth_mib": growth / 2**20,
        "rss_per_connection_kib": growth / 1024 / cell.concurrency,
        "peak_threads": sampler.peak_threads,
        "peak_greenlets": sampler.peak_greenlets,
        "peak_open_handshakes": sampler.peak_open,
        "peak_paused": sampler.peak_paused,
        "resumed_pct": 100 * clients["window_resumed"] / clients["window_ok"] if clients["window_ok"] else None,
        "window_errors": clients["window_errors"],
        "errors": errors,
        "error_kinds": clients["errors"],
        "error_samples": clients["error_samples"],
        "abandoned": clients["abandoned"],
        "server_completed_total": final.completed,
        "client_completed_total": clients["ok"],
        # a handshake the server finished may still fail at the client (or be cut off by the drain)
        "counts_consistent": 0 <= mismatch <= errors + clients["abandoned"],
    }


def measure_held(cell: Cell, bench: Bench, progress: Progress) -> dict[str, Any]:
    """Memory per paused handshake: *cell.concurrency* clients connect once each; their callbacks
    sleep longer than the cell lasts; measured once every handshake is paused or the count
    stops rising (a pool holds no more than its threads).  Then the server is killed."""
    server = bench.start_server(cell)
    started = time.monotonic()
    try:
        sampler = Sampler(server, bench.load)
        bench.start_load(cell, server.port, per_client=1)
        rose_at = started
        while True:
            best = sampler.peak_paused
            sampler.sample()
            now = time.monotonic()
            rose_at = now if sampler.peak_paused > best else rose_at
            progress(f"{sampler.paused}/{cell.concurrency} paused, {now - started:4.1f}s")
            if (
                sampler.peak_paused >= cell.concurrency
                or now - rose_at > HELD_STALL
                or now - started > bench.profile.warmup_max
            ):
                break
            time.sleep(SAMPLE_EVERY)
    finally:
        server.stop()
        bench.load.stop((0.0, 0.0), drain=5.0)  # the clients fail now that the server is gone: not counted
    growth = sampler.peak_rss - sampler.idle_rss
    return {
        "cell": cell.as_dict(),
        "key": cell.key,
        "peak_paused": sampler.peak_paused,
        "peak_open_handshakes": sampler.peak_open,
        "seconds_to_peak": rose_at - started,
        "idle_rss_mib": sampler.idle_rss / 2**20,
        "peak_rss_mib": sampler.peak_rss / 2**20,
        "rss_growth_mib": growth / 2**20,
        "rss_per_paused_kib": growth / 1024 / sampler.peak_paused if sampler.peak_paused else None,
        "peak_threads": sampler.peak_threads,
        "peak_greenlets": sampler.peak_greenlets,
    }


BULK_SLACK_GB = 64 / 1024  # a bulk server is ahead of its client by what the socket buffers hold (MiB on loopback)


def measure_data(cell: Cell, bench: Bench, progress: Progress) -> dict[str, Any]:
    """A data cell (echo, bulk, http): kept connections working; server CPU over the server's own count
    of units in the window (round trips, GB, requests); latency of each unit from the clients."""
    target = 0 if cell.work == "bulk" else max(cell.concurrency, 10)  # every client's first unit
    run = run_window(cell, bench, progress, "units", target)
    sampler, first, last, final, clients = run.sampler, run.first, run.last, run.final, run.clients
    window = last.at - first.at
    units = last.completed - first.completed
    latencies = clients["latencies"]
    errors = sum(clients["errors"].values())
    ahead = final.completed - clients["units"]  # the server's count minus the clients'
    slack = BULK_SLACK_GB if cell.work == "bulk" else errors + clients["abandoned"]
    return {
        "cell": cell.as_dict(),
        "key": cell.key,
        "unit": UNITS[cell.work],
        "window_s": window,
        "units_per_s": units / window,
        "server_cpu_us_per_unit": 1e6 * (last.server_cpu - first.server_cpu) / units if units else None,
        **_window_figures(first, last, latencies),
        "idle_rss_mib": sampler.idle_rss / 2**20,
        "peak_rss_mib": sampler.peak_rss / 2**20,
        "rss_growth_mib": (sampler.peak_rss - sampler.idle_rss) / 2**20,
        "errors": errors,
        "error_kinds": clients["errors"],
        "error_samples": clients["error_samples"],
        "abandoned": clients["abandoned"],
        "server_units_total": final.completed,
        "client_units_total": clients["units"],
        "counts_consistent": -1e-9 <= ahead <= slack + 1e-9,
    }


def measure_idle(cell: Cell, bench: Bench, progress: Progress) -> dict[str, Any]:
    """RSS per idle established connection: *cell.concurrency* clients connect, echo once and wait;
    measured once every one is established (or the count stops rising), after the memory settles."""
    server = bench.start_server(cell)
    started = time.monotonic()
    try:
        sampler = Sampler(server, bench.load, counted="units")
        bench.start_load(cell, server.port)
        rose_at, best = started, 0.0
        while True:
            sampler.sample()
            now = time.monotonic()
            rose_at, best = (now, sampler.completed) if sampler.completed > best else (rose_at, best)
            progress(f"{sampler.completed:.0f}/{cell.concurrency} established, {now - started:4.1f}s")
            if best >= cell.concurrency or now - rose_at > HELD_STALL or now - started > bench.profile.warmup_max:
                break
            time.sleep(SAMPLE_EVERY)
        time.sleep(IDLE_SETTLE)  # the last handshakes' transient buffers are freed
        settled = sampler.sample()
        rss = sampler.rss
        clients = bench.load.stop((0.0, 0.0), drain=5.0)
        final = sampler.sample()
    finally:
        server.stop()
    growth = rss - sampler.idle_rss
    return {
        "cell": cell.as_dict(),
        "key": cell.key,
        "established": settled.completed,
        "seconds_to_establish": rose_at - started,
        "idle_rss_mib": sampler.idle_rss / 2**20,
        "rss_mib": rss / 2**20,
        "rss_growth_mib": growth / 2**20,
        "rss_per_connection_kib": growth / 1024 / settled.completed if settled.completed else None,
        "errors": sum(clients["errors"].values()),
        "error_kinds": clients["errors"],
        "error_samples": clients["error_samples"],
        "server_units_total": final.completed,
        "client_units_total": clients["units"],
        "counts_consistent": final.completed == clients["units"],
    }
