"""The load generator of the soak tests, run in its own process so the server's RSS is measured alone.

``tests/servers/test_soak.py`` runs it as ``python tests/loadgen.py CERTIFICATES-JSON``;
`main` answers each JSON command on stdin with one JSON line on stdout (a
count of outcomes).  It imports no pausetls: its clients are CPython's
``ssl`` on gevent sockets.

* ``("mixed", port, n, concurrency)`` runs *n* handshakes, a quarter each of: full (trusted
  client certificate), resumed (the last session this worker got), failed
  (a certificate the server does not trust) and cancelled (the client
  closes after the server's first flight).
* ``("open", port, n, concurrency)`` opens *n* TLS 1.3 connections with a client certificate
  and sends b"ping" on each, keeping them all open; answers once every one is
  open.  ``("collect",)`` then reads their answers and closes them.
"""

from __future__ import annotations

import json
import resource
import ssl
import sys
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.socket
import gevent.ssl
from gevent.pool import Pool

HOST = "127.0.0.1"


@dataclass
class Certificates:
    """Paths (as str: this crosses a process boundary) of the CA and of a trusted and an untrusted client."""

    ca: str
    good_chain: str
    good_key: str
    bad_chain: str
    bad_key: str


def _context(ca: str, chain: str, key: str, tls13_only: bool = False) -> ssl.SSLContext:
    ctx: ssl.SSLContext = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=ca)
    ctx.load_cert_chain(chain, key)
    if tls13_only:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class Mixed:
    """One worker's share of mixed handshakes; keeps the session it resumes."""

    def __init__(self, port: int, good: ssl.SSLContext, bad: ssl.SSLContext) -> None:
        self.port = port
        self.good = good
        self.bad = bad
        self.session: ssl.SSLSession | None = None

    def one(self, kind: int) -> str:
        try:
            if kind == 0:
                return self._echo(None)
            if kind == 1:
                return self._echo(self.session)
            if kind == 2:
                return "failed-unexpectedly-ok" if self._echo(None, self.bad) == "full" else "failed"
            return self._cancel()
        except (OSError, ssl.SSLError) as exc:
            return "failed" if kind == 2 else f"error {kind} {type(exc).__name__}: {exc}"

    def _echo(self, session: ssl.SSLSession | None, ctx: ssl.SSLContext | None = None) -> str:
        with gevent.socket.create_connection((HOST, self.port), timeout=10) as sock:
            with (ctx or self.good).wrap_socket(sock, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"ping")
                if tls.recv(10) != b"ping":
                    return "failed" if ctx is self.bad else "no-echo"
                if ctx is None:
                    self.session = tls.session  # TLS 1.3 tickets are single use: resume the newest
                return "resumed" if tls.session_reused else "full"

    def _cancel(self) -> str:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.good.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with gevent.socket.create_connection((HOST, self.port), timeout=10) as sock:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
            sock.recv(65536)  # the server's first flight; then we leave mid-handshake
        return "cancelled"


def run_mixed(port: int, certs: Certificates, n: int, concurrency: int) -> Counter[str]:
    good = _context(certs.ca, certs.good_chain, certs.good_key)
    bad = _context(certs.ca, certs.bad_chain, certs.bad_key)
    workers = [Mixed(port, good, bad) for _ in range(concurrency)]
    counts: Counter[str] = Counter()

    def work(index: int) -> None:
        worker = workers[index]
        for i in range(index, n, concurrency):
            counts[worker.one(i % 4)] += 1

    pool = Pool(concurrency)
    for index in range(concurrency):
        pool.spawn(work, index)
    pool.join()
    return counts


class Held:
    """Many TLS 1.3 connections opened, pinged, and held until their answers are collected."""

    def __init__(self, certs: Certificates) -> None:
        self.port = 0
        self.ctx = _context(certs.ca, certs.good_chain, certs.good_key, tls13_only=True)
        self.open: list[ssl.SSLSocket] = []
        self.counts: Counter[str] = Counter()

    def open_all(self, port: int, n: int, concurrency: int) -> Counter[str]:
        self.port = port
        self.counts = Counter()
        pool = Pool(concurrency)
        for _ in range(n):
            pool.spawn(self.open_one)
        pool.join()
        return self.counts.copy()

    def collect_all(self) -> Counter[str]:
        self.counts = Counter()
        gevent.joinall([gevent.spawn(self.collect_one, tls) for tls in self.open], timeout=300)
        self.open = []
        return self.counts.copy()

    def open_one(self) -> None:
        try:
            sock = gevent.socket.create_connection((HOST, self.port), timeout=60)
            tls = self.ctx.wrap_socket(sock, server_hostname="localhost")  # TLS 1.3: done before the server verifies
            tls.sendall(b"ping")
            self.open.append(tls)
            self.counts["open"] += 1
        except (OSError, ssl.SSLError) as exc:
            self.counts[f"open error {type(exc).__name__}: {exc}"] += 1

    def collect_one(self, tls: ssl.SSLSocket) -> None:
        try:
            self.counts["answered" if tls.recv(10) == b"ping" else "no answer"] += 1
        except (OSError, ssl.SSLError) as exc:
            self.counts[f"answer error {type(exc).__name__}: {exc}"] += 1
        finally:
            tls.close()


def main(certs: Certificates) -> None:
    """Answer the JSON commands on stdin, one JSON object (a count of outcomes) per line on stdout."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held = Held(certs)
    for line in sys.stdin:
        command: list[Any] = json.loads(line)
        try:
            if command[0] == "mixed":
                counts = run_mixed(command[1], certs, command[2], command[3])
            elif command[0] == "open":
                counts = held.open_all(command[1], command[2], command[3])
            else:
                counts = held.collect_all()
        except Exception:  # noqa: BLE001 - the test shows it rather than waiting on a dead child
            counts = Counter({"load generator failed: " + traceback.format_exc(): 1})
        print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(Certificates(**json.loads(sys.argv[1])))
