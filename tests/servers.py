"""Real memcached and Redis servers on loopback, plus small fake servers for failure tests.

`MemcachedServer` and `RedisServer` run the real binaries on a free port;
`stop()` kills the process (like a crash) and `start()` brings it back on the
same port, so a test can take a store's server away mid-run.  The fixtures
`memcached_server` and `redis_server` (function scope) start one and stop it
in teardown; conftest imports them (with `require_binary`), and a test module
may import them too::

    from servers import memcached_server, redis_server  # noqa: F401

This module imports nothing from conftest, which imports it.

`DelayProxy` and `ScriptedServer` run in real OS threads with stdlib
sockets, so they keep working whether the test's hub is free or blocked: a
store that blocks the hub still gets its answer, just without letting any
greenlet run meanwhile, which is what the cooperation tests look for.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

import gevent
import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def require_binary(name: str) -> str:
    """The path of *name*, or skip the test saying what is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class ServerProcess:
    """One server binary on a fixed loopback port, restartable."""

    scheme = ""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._started = False

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start (again, on the same port) and wait until it accepts connections."""
        for attempt in range(3):
            try:
                self._start_once()
            except RuntimeError:
                if self._started or attempt == 2:
                    raise
                self.port = free_port()  # someone took the free port first: the first start may move
            else:
                self._started = True
                return

    def _start_once(self) -> None:
        assert self.process is None, "already running"
        if _accepts(self.port):  # or the readiness check below would be fooled by someone else's server
            raise RuntimeError(f"port {self.port} is already in use")
        self._log = tempfile.TemporaryFile()
        # the stdlib's Popen, not gevent's: gevent's child watcher would reap every child of the process from
        # then on, and a later test's Popen.wait() would read exit status 0 for a child that failed (peers.py)
        self.process = subprocess.Popen(self.argv(), stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise RuntimeError(f"{' '.join(self.argv())} did not start:\n{output}")
            gevent.sleep(0.01)

    def stop(self) -> None:
        """Kill the process (no clean shutdown: clients see their connections reset) and reap it."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            deadline = time.monotonic() + START_TIMEOUT
            while self.process.poll() is None and time.monotonic() < deadline:
                gevent.sleep(0.01)  # reaped by polling, so the hub goes on meanwhile
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")


class MemcachedServer(ServerProcess):
    scheme = "memcached"

    def argv(self) -> list[str]:
        argv = [self.binary, "-l", HOST, "-p", str(self.port), "-U", "0", "-t", "1", "-m", "64"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root without it
        return argv


class RedisServer(ServerProcess):
    scheme = "redis"

    def __init__(self, binary: str, *, password: str | None = None) -> None:
        super().__init__(binary)
        self.password = password
        self._dir = tempfile.TemporaryDirectory(prefix="redis-")  # nothing is saved, but never in the cwd

    def argv(self) -> list[str]:
        argv = [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--protected-mode", "no", "--dir", self._dir.name]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        return argv

    def cleanup(self) -> None:
        self.stop()
        self._dir.cleanup()


@pytest.fixture
def memcached_server() -> Iterator[MemcachedServer]:
    server = MemcachedServer(require_binary("memcached"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(require_binary("redis-server"))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


class _ThreadServer:
    """A listener whose connections are served by OS threads until `close()`."""

    def __init__(self) -> None:
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.05)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


class ScriptedServer(_ThreadServer):
    """Answers every chunk it receives with *reply* (garbage), or never answers when *reply* is None."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            while not self._stopping.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                if self.reply is not None:
                    conn.sendall(self.reply)


class DelayProxy(_ThreadServer):
    """A TCP proxy to *upstream* that holds every client-to-server chunk for ``delay`` seconds, or until
    *release* is set."""

    def __init__(self, upstream: tuple[str, int], delay: float, release: threading.Event | None = None) -> None:
        self.upstream = upstream
        self.delay = delay
        self.release = release or threading.Event()
        super().__init__()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        with client, upstream, selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            while not self._stopping.is_set():
                for key, _ in selector.select(0.05):
                    source = client if key.fileobj is client else upstream
                    try:
                        data = source.recv(65536)
                        if not data:
                            return
                        if source is client:
                            self.release.wait(self.delay)
                        key.data.sendall(data)
                    except OSError:
                        return
