"""Descriptors: what a connection costs, and accepting when the process has none left.

The server runs in a child process (`fd_limited_server.py`) whose RLIMIT_NOFILE the test lowers,
so this process keeps its own.  The clients are CPython ``ssl`` in OS threads.
"""

from __future__ import annotations

import json
import queue
import select
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import pausetls
from pausetls.drivers.threads import thread_driver

from conftest import stdlib_client_context, wait_until
from pki import PKI, Issued
from served import pausetls_env

CHILD = Path(__file__).parents[1] / "fd_limited_server.py"
TIMEOUT = 30.0  # a generous ceiling for anything to happen, on a loaded machine


class LimitedServer:
    """The child server: one command line in, one answer line out (see `fd_limited_server`)."""

    def __init__(self, driver: str, server_cert: Issued, workdir: Path) -> None:
        self.stderr_path = workdir / f"{driver}-stderr.txt"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), driver, str(server_cert.chain_path), str(server_cert.key_path)],
                env=pausetls_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self._answer("port"))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _answer(self, name: str) -> str:
        try:
            line = self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the server did not answer {name!r} in {TIMEOUT} s")
        if line is None:
            pytest.fail(f"the server exited ({self.proc.wait()}): {self.stderr}")
        kind, _, value = line.partition(" ")
        assert kind == name, line
        return value

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._answer(command.split()[0])

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = json.loads(self.ask("stats"))
        return stats

    def fds(self) -> int:
        return int(self.ask("fds"))

    def quit(self) -> str:
        """Stop the server; its stderr."""
        self.ask("quit")
        self.proc.wait(TIMEOUT)
        return self.stderr

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)


@pytest.fixture
def limited_server(server_cert: Issued, tmp_path: Path) -> Iterator[Any]:
    started: list[LimitedServer] = []

    def start(driver: str) -> LimitedServer:
        started.append(LimitedServer(driver, server_cert, tmp_path))
        return started[-1]

    yield start
    for server in started:
        server.kill()


class HeldClient:
    """A client that connects, gets its echo, then holds its connection until *release* is set."""

    def __init__(self, port: int, ctx: ssl.SSLContext, release: threading.Event) -> None:
        self.port, self.ctx, self.release = port, ctx, release
        self.connected = threading.Event()

    def __call__(self) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as sock:
            self.connected.set()  # in the server's backlog, at least
            with self.ctx.wrap_socket(sock, server_hostname="localhost") as tls:
                tls.sendall(b"ping")
                echoed = tls.recv(10)
                assert self.release.wait(TIMEOUT)
                return echoed


def test_a_threaded_connection_costs_one_descriptor(limited_server: Any, pki: PKI) -> None:
    """Established, idle connections of the threaded server: one descriptor each (its socket)."""
    server = limited_server("threads")
    count = 10
    before = server.fds()
    release = threading.Event()
    clients = [HeldClient(server.port, stdlib_client_context(pki), release) for _ in range(count)]
    with ThreadPoolExecutor(count) as pool:
        echoes = [pool.submit(client) for client in clients]
        assert wait_until(lambda: server.stats()["handshakes_completed"] == count, TIMEOUT)
        during = server.fds()
        release.set()
        assert [echo.result(TIMEOUT) for echo in echoes] == [b"ping"] * count
    assert (during - before) / count == 1, f"{during - before} descriptors for {count} connections"
    assert wait_until(lambda: server.fds() == before, TIMEOUT)


def connected_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        server, _ = listener.accept()
    return server, client


@pytest.mark.parametrize("direction", ["readable", "writable"])
def test_closing_a_threaded_waiter_wakes_the_thread_waiting_on_its_socket(direction: str) -> None:
    """Without a pipe of its own, close() from another thread still ends a wait with ClosedError; under a
    reader the socket can still send (the owner's close_notify)."""
    sock, peer = connected_pair()
    with sock, peer:
        sock.setblocking(False)
        if direction == "writable":
            while True:  # fill the send buffer: the peer reads nothing
                try:
                    sock.send(b"x" * 65536)
                except BlockingIOError:
                    break
        waiter = thread_driver.io_waiter(sock)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(getattr(waiter, f"wait_{direction}"), None)
            assert wait_until(
                lambda: waiter._waiting[select.POLLIN if direction == "readable" else select.POLLOUT] == 1
            )
            waiter.close()
            with pytest.raises(pausetls.ClosedError):
                waiting.result(TIMEOUT)
        if direction == "readable":
            sock.send(b"close_notify would fit")
            assert peer.recv(100) == b"close_notify would fit"


@pytest.mark.parametrize("driver", ["threads", "gevent", "asyncio"])
def test_out_of_descriptors_the_clients_wait_in_the_backlog_and_are_all_served(
    limited_server: Any, pki: PKI, driver: str
) -> None:
    """More clients than free descriptors: the server pauses accepting (one line, one count, no
    traceback); the others wait in the backlog, and once descriptors free up every one is served."""
    server = limited_server(driver)
    server.fds()  # everything a handshake needs was imported when the server started
    free = int(server.ask("limit 8"))
    release = threading.Event()
    clients = [HeldClient(server.port, stdlib_client_context(pki), release) for _ in range(free + 8)]
    with ThreadPoolExecutor(len(clients)) as pool:
        echoes = [pool.submit(client) for client in clients]
        assert wait_until(lambda: all(client.connected.is_set() for client in clients), TIMEOUT)
        assert wait_until(lambda: server.stats()["accepts_paused"] == 1, TIMEOUT), server.stats()
        release.set()  # the first ones close: the ones in the backlog get their descriptors
        results = []
        for echo in echoes:
            try:
                results.append(echo.result(TIMEOUT))
            except OSError as exc:  # a reset or an end of stream instead of the echo
                results.append(repr(exc).encode())
    assert results == [b"ping"] * len(clients)
    stats = server.stats()
    assert stats["handshakes_completed"] == len(clients)
    assert stats["handshakes_failed"] == 0
    assert stats["accepts_paused"] == 1  # one episode: until the backlog was empty
    stderr = server.quit()
    assert "Traceback" not in stderr, stderr
    paused = [line for line in stderr.splitlines() if "TLS accept paused" in line]
    assert len(paused) == 1, stderr
    assert "EMFILE" in paused[0] and "backlog" in paused[0]
