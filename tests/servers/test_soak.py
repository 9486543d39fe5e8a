"""Soak: many mixed handshakes leave memory and descriptors where they were; thousands of paused handshakes at once.

The load comes from another process (``tests/loadgen.py``) so this
process's RSS is the server's alone.  Sizes come from the
environment, so CI runs a bounded size (6,000 and 3,000 when ``CI`` is set) and a person can run a
large one::

    PAUSETLS_SOAK_HANDSHAKES=200000 PAUSETLS_SOAK_PAUSED=20000 pytest -m soak -s tests/servers/test_soak.py
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent.event import Event
from OpenSSL import crypto

import pausetls
from pausetls.stores import MemoryStore

import loadgen
from conftest import echo_handler, wait_until
from loadgen import Certificates
from peers import Peer
from pki import PKI, Issued
from reliability import HOST, mutual_context

# CI (``CI`` set) runs a bounded size, so the whole suite stays within minutes on a loaded 2-core machine
SOAK_HANDSHAKES = int(os.environ.get("PAUSETLS_SOAK_HANDSHAKES", "6000" if os.environ.get("CI") else "20000"))
PAUSED_HANDSHAKES = int(os.environ.get("PAUSETLS_SOAK_PAUSED", "3000" if os.environ.get("CI") else "10000"))
KINDS = {"full", "resumed", "failed", "cancelled"}

pytestmark = pytest.mark.soak


class LoadProcess:
    """`loadgen.main` in a child process, asked commands without blocking the server's hub.

    A plain subprocess (`peers.Peer`, polled), not ``multiprocessing``: once anything
    in the process starts a ``gevent.subprocess`` child, gevent's child watcher reaps
    every child, and ``multiprocessing``'s ``join`` would never see this one exit.
    """

    def __init__(self, certs: Certificates) -> None:
        self.peer = Peer([sys.executable, loadgen.__file__, json.dumps(asdict(certs))])
        self._read = 0  # how much of its stdout has been answered

    def ask(self, *command: Any, timeout: float) -> Counter[str]:
        """Send *command*; its answer (waiting on gevent, so the server in this process goes on)."""
        self.peer.write(json.dumps(command).encode() + b"\n")

        def answered() -> int:
            end = self.peer.stdout.data.find(b"\n", self._read)
            return end + 1 if end >= 0 else 0

        end = self.peer.wait_for(answered, f"an answer to {command[0]}", timeout)
        answer, self._read = self.peer.stdout.data[self._read : end], end
        return Counter(json.loads(answer))

    def stop(self) -> None:
        self.peer.close_stdin()  # main's loop ends
        try:
            self.peer.wait()
        finally:
            self.peer.stop()


def rss() -> int:
    """This process's resident set, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def open_fds() -> dict[str, str]:
    """This process's descriptors and what they point at."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            pass  # the directory's own descriptor, gone already
    return fds


def settle(server: Any) -> int:
    """Wait for every connection of *server* to end and its deferred writes to land; RSS after a full gc."""
    cache = server.context.session_cache
    assert wait_until(lambda: not server.pool and not (cache and cache._pending_writes), timeout=30)
    for _ in range(3):
        gc.collect()
    return rss()


def report(tmp_path: Path, name: str, figures: dict[str, Any]) -> None:
    """Print the figures (seen with ``-s``) and keep them as JSON under the test's tmp dir."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True))
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}\n  ({path})")


@pytest.fixture
def certs(pki: PKI, client_cert: Issued, untrusted_client_cert: Issued) -> Certificates:
    return Certificates(
        str(pki.ca_path),
        str(client_cert.chain_path),
        str(client_cert.key_path),
        str(untrusted_client_cert.chain_path),
        str(untrusted_client_cert.key_path),
    )


@pytest.fixture
def fd_limit() -> Iterator[int]:
    """The soft RLIMIT_NOFILE raised to the hard one for the test (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _pausing_verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
    if depth == 0:
        gevent.sleep(0)  # every leaf check pauses the handshake once
    return bool(ok)


def test_soak_mixed_handshakes_keep_memory_and_descriptors_steady(
    pki: PKI, server_cert: Issued, certs: Certificates, tmp_path: Path
) -> None:
    half = SOAK_HANDSHAKES // 2
    load = LoadProcess(certs)
    gc.collect()  # sockets an earlier test dropped close now, not during this one
    fds_before = open_fds()  # with the load's pipes open
    ctx = mutual_context(pki, server_cert, None, _pausing_verify)
    ctx.set_session_cache(MemoryStore(max_entries=1000))  # bounded, so it is full by the end of the first half
    server = pausetls.TLSServer((HOST, 0), echo_handler, context=ctx, backlog=1024, handshake_timeout=10)
    server.start()
    started = time.monotonic()
    try:
        first = load.ask("mixed", server.server_port, half, 32, timeout=300)
        rss_first = settle(server)
        second = load.ask("mixed", server.server_port, half, 32, timeout=300)
        rss_second = settle(server)
    finally:
        server.stop(timeout=1)
        fds_after = open_fds()
        load.stop()
    elapsed = time.monotonic() - started
    failed, cancelled = len(range(2, half, 4)), len(range(3, half, 4))  # the loadgen's kinds go round by 4
    for counts in (first, second):
        assert set(counts) <= KINDS, counts
        assert (counts["failed"], counts["cancelled"]) == (failed, cancelled), counts
        assert counts["resumed"] >= len(range(1, half, 4)) - 32  # each worker's first "resume" has no session
    stats = server.stats
    assert stats.accepted == 2 * half and stats.handshakes_completed + stats.handshakes_failed == 2 * half
    assert stats.verification_failures == 2 * failed and stats.resumed == first["resumed"] + second["resumed"]
    growth = (rss_second - rss_first) / rss_first
    report(
        tmp_path,
        "soak",
        {
            "handshakes": 2 * half,
            "seconds": round(elapsed, 1),
            "rss_after_first_half": rss_first,
            "rss_after_second_half": rss_second,
            "growth": round(growth, 4),
            "outcomes": dict(first + second),
        },
    )
    assert abs(growth) <= 0.05, f"RSS went from {rss_first} to {rss_second} ({growth:+.1%})"
    assert wait_until(lambda: pausetls.live_objects()["ssl"] == 0 and pausetls.live_objects()["callbacks"] == 0)
    counts = pausetls.live_objects()
    assert counts["ssl"] == counts["tls_sockets"] == counts["jobs"] == counts["callbacks"] == 0, counts
    assert fds_after.items() <= fds_before.items(), "descriptors left open"


def test_thousands_of_concurrently_paused_handshakes_complete(
    pki: PKI, server_cert: Issued, certs: Certificates, fd_limit: int, tmp_path: Path
) -> None:
    n = PAUSED_HANDSHAKES
    if fd_limit < n + 1024:
        pytest.skip(f"RLIMIT_NOFILE hard limit {fd_limit} is below the {n} + 1024 descriptors this needs")
    release = Event()
    release.set()  # the warm-up goes straight through
    paused = 0

    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        nonlocal paused
        if depth == 0 and not release.is_set():
            paused += 1
            try:
                release.wait()  # every handshake pauses here until the test lets them all go
            finally:
                paused -= 1
        return bool(ok)

    ctx = mutual_context(pki, server_cert, pausetls.TLS1_3_VERSION, verify)
    server = pausetls.TLSServer((HOST, 0), echo_handler, context=ctx, backlog=4096, handshake_timeout=None)
    server.start()
    load = LoadProcess(certs)
    started = time.monotonic()
    try:
        assert load.ask("open", server.server_port, 200, 100, timeout=60) == Counter(open=200)  # warm-up
        assert load.ask("collect", timeout=60) == Counter(answered=200)
        rss_before = settle(server)
        release.clear()
        opened = load.ask("open", server.server_port, n, 200, timeout=600)
        assert opened == Counter(open=n), opened
        assert wait_until(lambda: paused == n, timeout=120), f"{paused} of {n} paused"
        gc.collect()
        rss_paused = rss()
        assert server.stats.handshaking == n
        release.set()
        answered = load.ask("collect", timeout=600)
    finally:
        release.set()
        load.stop()
        server.stop(timeout=1)
    assert answered == Counter(answered=n), answered
    assert server.stats.handshakes_completed == n + 200 and server.stats.handshakes_failed == 0
    per_handshake = (rss_paused - rss_before) / n
    report(
        tmp_path,
        "paused_handshakes",
        {
            "paused_at_once": n,
            "seconds": round(time.monotonic() - started, 1),
            "rss_before": rss_before,
            "rss_with_all_paused": rss_paused,
            "rss_per_paused_handshake_bytes": round(per_handshake),
            "openssl": pausetls.openssl_version(),
        },
    )
