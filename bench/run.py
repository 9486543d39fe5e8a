"""The benchmark's entry point: ``pausetls bench [--quick] ...`` (or ``python -m bench``)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import floor, machine, report
from bench.cell import Bench, measure, measure_data, measure_held, measure_idle
from bench.children import ChildError
from bench.loadgen import LoadGenerator
from bench.nginx import NGINX_MISSING, find_nginx
from bench.pki import KEY_TYPES, make_pki
from bench.plan import CALLBACKS, MODES, PROFILES, Cell, Profile
from bench.procstat import machine_task_seconds
from bench.progress import Progress

DEFAULT_OUT = Path(__file__).resolve().parent / "out"
FOREIGN_CPU_WARNING = 15.0  # % of a CPU used by processes outside the benchmark: the cell is flagged
GIVE_UP_ERROR_RATE = 0.5  # a mode failing this often at one concurrency is not run at higher ones

METHOD = [
    "- Every mode runs in a fresh process per cell, on 127.0.0.1; the load comes from separate processes, each a "
    "gevent loop of stdlib `ssl` clients (TLS 1.3, no verification of the server's chain: that is client work).",
    "- A client connects, handshakes, sends `GET / HTTP/1.0`, reads the response to its end and closes; then "
    "starts over (a closed loop: *c* clients keep *c* connections going). Latency is that whole round.",
    "- Where the latency comes from: "
    + "; ".join(f"*{name}*: {text}" for name, text in CALLBACKS.items())
    + ". pausetls waits inside the handshake; the stdlib anchor cannot pause a callback, so it waits in its "
    "handler right after the handshake (same wait per connection); nginx runs at zero latency only.",
    "- Server µs/hs is the stable figure on a small machine: the server's own CPU time over its own count. "
    "hs/s depends on the load processes too, which share the CPUs: compare server and load CPU %.",
    "- *held*: each client connects once; callbacks do not return while measured; RSS growth over the number "
    "of handshakes the server holds paused at once is the memory one paused handshake costs.",
    "- Data-path cells (echo, bulk, idle, http): each client keeps one connection (stdlib `ssl`, TCP_NODELAY) and "
    "works on it until the cell ends; the server counts its own units (bytes echoed / size, bytes sent, requests) "
    "and server µs/unit is its CPU over that count in the window; `counts` checks it against the clients' "
    "(bulk: the server may be ahead by what socket buffers hold). *idle*: RSS growth over the connections "
    "established, read one second after the last, each handler waiting in recv(65536).",
    "- `pausetls-gevent-xN`: N = cores pre-fork workers (`pausetls.servers.prefork`) on one listener; its CPU, "
    "RSS and counters are the sum over the parent and its workers (RSS counts shared pages once per process).",
]


def wait_for_quiet(progress: Progress, longest: float) -> float:
    """Wait (up to *longest* seconds) until other processes use less than FOREIGN_CPU_WARNING % of a CPU:
    the machine may be shared.  Returns the foreign CPU % of the last second."""
    deadline = time.monotonic() + longest
    while True:
        before, own = machine_task_seconds(), time.process_time()
        time.sleep(1.0)
        foreign = 100 * (machine_task_seconds() - before - (time.process_time() - own))
        if foreign < FOREIGN_CPU_WARNING or time.monotonic() >= deadline:
            return foreign
        progress.update(f"waiting for other processes to go quiet ({foreign:.0f}% of a CPU)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pausetls bench",
        description="Benchmark pausetls against thread-per-connection, thread pools, gevent + stdlib ssl and nginx, "
        "on loopback. Writes results.json, results.md and results.png into --out.",
    )
    parser.add_argument("--quick", action="store_true", help="the smoke profile (under 3 minutes)")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated subset of: {', '.join(MODES)} (default: all)"
    )
    parser.add_argument("--scenarios", help="comma-separated subset of the profile's scenarios (default: all)")
    parser.add_argument("--key", choices=KEY_TYPES, default="ecdsa", help="certificate keys: P-256 or RSA-2048")
    parser.add_argument("--out", type=Path, help=f"output directory (default: {DEFAULT_OUT}/<date-time>)")
    parser.add_argument("--load-processes", type=int, default=2, metavar="N", help="load generator processes (2)")
    parser.add_argument("--nginx", metavar="PATH", help="the nginx binary (default: found on PATH or /usr/sbin)")
    parser.add_argument("--bench-dir", metavar="DIR", help="where bench/ is (read by `pausetls bench` only)")
    return parser


def _select(profile: Profile, scenarios: str | None) -> Profile:
    if not scenarios:
        return profile
    wanted = set(scenarios.split(","))
    unknown = wanted - {s.name for s in profile.scenarios}
    if unknown:
        raise SystemExit(f"pausetls bench: unknown scenario(s) {', '.join(sorted(unknown))}")
    kept = [s for s in profile.scenarios if s.name in wanted]
    return dataclasses.replace(profile, scenarios=kept)


def _summary(result: dict[str, Any]) -> str:
    counts = "" if result.get("counts_consistent", True) else ", SERVER AND CLIENT COUNTS DIFFER"
    if result["cell"].get("work") == "idle":
        per = result["rss_per_connection_kib"] or 0
        growth = result["rss_growth_mib"]
        return f"{result['established']:.0f} established, RSS +{growth:.1f} MiB ({per:.1f} KiB each)" + counts
    if "unit" in result:
        cpu = result["server_cpu_us_per_unit"] or 0
        return (
            f"{result['units_per_s']:,.1f} {result['unit']}/s, p50 {result['p50_ms'] or 0:.2f} ms, "
            f"server {cpu:,.1f} µs per {result['unit']} at {result['server_cpu_pct']:.0f}% CPU "
            f"(load {result['load_cpu_pct']:.0f}%), {result['errors']} errors" + counts
        )
    if result["cell"]["scenario"] == "held":
        per = result["rss_per_paused_kib"]
        return f"{result['peak_paused']} paused, RSS +{result['rss_growth_mib']:.1f} MiB" + (
            f" ({per:.1f} KiB each)" if per else ""
        )
    cpu = result["server_cpu_us_per_handshake"]
    return (
        f"{result['handshakes_per_s']:.0f} hs/s, p99 {result['p99_ms'] or 0:.0f} ms, "
        f"server {cpu or 0:.0f} µs/hs at {result['server_cpu_pct']:.0f}% CPU (load {result['load_cpu_pct']:.0f}%, "
        f"machine {result['machine_cpu_pct']:.0f}%), "
        f"RSS +{result['rss_growth_mib']:.1f} MiB, {result['errors']} errors"
        + ("" if result["counts_consistent"] else ", SERVER AND CLIENT COUNTS DIFFER")
    )


class Runner:
    """Runs a profile's cells in order; a mode that breaks down at one concurrency skips the higher ones."""

    def __init__(self, profile: Profile, args: argparse.Namespace, nginx: str | None, nofile: int) -> None:
        self.profile = profile
        self.args = args
        self.nginx = nginx
        self.nofile = nofile
        self.notes: list[str] = []
        self.stopped: dict[tuple[str, str], str] = {}

    def run(self, cells: list[Cell], work: Path, progress: Progress) -> list[dict[str, Any]]:
        load = LoadGenerator(self.args.load_processes, work)
        bench = Bench(self.profile, make_pki(work, self.args.key), load, work, self.nginx, self.nofile)
        results = []
        try:
            for index, cell in enumerate(cells, 1):
                progress.cell(index, f"{cell.scenario} {cell.describe()}")
                if self.profile.quiet_wait:
                    wait_for_quiet(progress, self.profile.quiet_wait)
                results.append(self._one(cell, bench, progress))
        finally:
            load.close()
        return results

    def _skip(self, cell: Cell, reason: str, progress: Progress) -> dict[str, Any]:
        progress.done(f"skipped: {reason}")
        return {"cell": cell.as_dict(), "key": cell.key, "skipped": reason}

    def _one(self, cell: Cell, bench: Bench, progress: Progress) -> dict[str, Any]:
        series = (cell.scenario, cell.mode)
        reason = self.stopped.get(series) or machine.why_not(cell, self.nofile, self.args.load_processes)
        if reason:
            if series not in self.stopped:
                self.stopped[series] = reason
                self.notes.append(f"{cell.mode}, {cell.scenario}, {cell.concurrency} clients and up: {reason}")
            return self._skip(cell, reason, progress)
        how = measure_held if cell.scenario == "held" else measure
        if cell.is_data:
            how = measure_idle if cell.work == "idle" else measure_data
        try:
            result = how(cell, bench, progress.update)
        except ChildError as exc:
            reason = f"failed at {cell.concurrency} clients: {exc}"
            self.stopped[series] = reason
            self.notes.append(f"{cell.mode}, {cell.scenario}: {reason}")
            return self._skip(cell, reason, progress)
        progress.done(_summary(result))
        if result.get("foreign_cpu_pct", 0) > FOREIGN_CPU_WARNING:
            self.notes.append(
                f"{cell.key}: other processes used {result['foreign_cpu_pct']:.0f}% of a CPU during the window "
                "(its hs/s is suspect; server µs/hs less so)"
            )
        attempts = result.get("client_completed_total", 0) + result.get("errors", 0)
        if attempts and result.get("errors", 0) > GIVE_UP_ERROR_RATE * attempts:
            reason = f"stopped after {cell.concurrency} clients: {result['errors']} of {attempts} connections failed"
            self.stopped[series] = reason
            self.notes.append(f"{cell.mode}, {cell.scenario}: {reason} ({', '.join(result['error_samples'][:2])})")
        return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = set(modes) - set(MODES)
    if unknown:
        print(
            f"pausetls bench: unknown mode(s) {', '.join(sorted(unknown))}; known: {', '.join(MODES)}", file=sys.stderr
        )
        return 2
    started = time.monotonic()
    nofile = machine.raise_nofile()
    nginx = find_nginx(args.nginx) if "nginx" in modes else None
    notes = []
    if "nginx" in modes and nginx is None:
        notes.append(NGINX_MISSING)
        print(f"pausetls bench: {NGINX_MISSING}", file=sys.stderr)
        modes = tuple(m for m in modes if m != "nginx")
    profile = _select(PROFILES["quick" if args.quick else "full"](modes), args.scenarios)
    out = args.out or DEFAULT_OUT / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(len(profile.cells))
    progress.note(f"pausetls bench: {profile.name} profile, {len(profile.cells)} cells, output in {out}")
    progress.note("measuring the crypto floor (openssl speed, about 3 s)")
    crypto_floor = floor.measure(args.key)
    runner = Runner(profile, args, nginx, nofile)
    with tempfile.TemporaryDirectory(prefix="pausetls-bench-") as work:
        cells = runner.run(profile.cells, Path(work), progress)
    results = {
        "command": shlex.join(["pausetls", "bench", *(sys.argv[1:] if argv is None else argv)]),
        "profile": profile.name,
        "key_type": args.key,
        "machine": machine.describe(nginx, nofile),
        "crypto_floor": crypto_floor,
        "scenarios": [{"name": s.name, "title": s.title} for s in profile.scenarios],
        "cells": cells,
        "notes": notes + runner.notes,
        "method": METHOD,
        "elapsed_s": time.monotonic() - started,
    }
    paths = report.write(results, out)
    progress.note(f"done in {results['elapsed_s'] / 60:.1f} min: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
