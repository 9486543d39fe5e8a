"""TLS peers that are not pausetls: ``openssl``/``curl`` subprocesses and stdlib `ssl` in real threads.

The test process is not monkey-patched, so everything here that waits does
so on gevent (cooperative pipe reads, gevent timeouts, the hub's thread
pool): an in-process `pausetls.TLSServer` keeps running while a test waits
for its peer.  Every wait is bounded, and every process and thread is ended
by `Peer.stop` / `StdlibServer.stop` (`PeerGroup.stop_all`, which the
``peers`` fixture calls in teardown whatever happened).

Subprocesses are the stdlib's `subprocess.Popen`, not ``gevent.subprocess``:
gevent's child watcher makes libev reap *every* child of the process from
then on, so a later test's stdlib ``Popen.wait()`` would see exit status 0
for a child that failed.  Exits are polled instead (``waitpid(WNOHANG)``).
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gevent
import pytest
from gevent.event import Event
from gevent.os import make_nonblocking, nb_read, nb_write

from gates import GENEROUS
from servers import require_binary

DEFAULT_TIMEOUT = GENEROUS
_POLL = 0.005  # seconds between checks of a child's exit status


class PeerError(AssertionError):
    """A peer did not do what the test waited for; the message carries its output."""


class _Stream:
    """Everything a subprocess wrote to one pipe, read by a greenlet as it arrives."""

    def __init__(self, pipe: Any, changed: Event) -> None:
        self.data = bytearray()
        self._fd = pipe.fileno()
        self._changed = changed
        make_nonblocking(self._fd)
        self.reader = gevent.spawn(self._drain)

    def _drain(self) -> None:
        try:
            while chunk := nb_read(self._fd, 65536):
                self.data += chunk
                self._changed.set()
        finally:
            self._changed.set()

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class Peer:
    """One subprocess whose stdout and stderr are collected as they arrive."""

    def __init__(self, argv: Sequence[str], *, stdin: bool = True) -> None:
        self.argv = list(argv)
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        if self.process.stdin is not None:
            make_nonblocking(self.process.stdin.fileno())
        self._changed = Event()
        self.stdout = _Stream(self.process.stdout, self._changed)
        self.stderr = _Stream(self.process.stderr, self._changed)

    def describe(self) -> str:
        self.process.poll()
        return (
            f"{' '.join(self.argv)}\n  returncode: {self.process.returncode}\n"
            f"  stdout: {self.stdout.text!r}\n  stderr: {self.stderr.text!r}"
        )

    def wait_for(
        self, predicate: Callable[[], Any], what: str, timeout: float = DEFAULT_TIMEOUT, *, poll: float | None = None
    ) -> Any:
        """Wait (on gevent) until *predicate()* is true; its value is returned.

        The predicate is checked whenever the peer writes something, and every
        *poll* seconds if given (for predicates on state outside the peer).
        """
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            value = predicate()
            if value:
                return value
            if self.stdout.reader.dead and self.stderr.reader.dead:
                raise PeerError(f"peer ended before {what}:\n{self.describe()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError(f"timed out waiting for {what}:\n{self.describe()}")
            self._changed.wait(left if poll is None else min(left, poll))

    def wait_output(self, needle: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wait_for(lambda: needle in self.stdout.data, f"{needle!r} on stdout", timeout)

    def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        view = memoryview(data)
        while view:
            view = view[nb_write(self.process.stdin.fileno(), view) :]

    def offer(self, data: bytes) -> None:
        """Write ``data`` and close stdin, for a peer that may have exited already (its handshake refused)."""
        try:
            self.write(data)
        except BrokenPipeError:
            pass  # it is gone before reading its stdin: whether it got anything back is what the caller checks
        self.close_stdin()

    def close_stdin(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()

    def _poll_exit(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None and time.monotonic() < deadline:
            gevent.sleep(_POLL)
        return code

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """The exit status, once the process and its output pipes are done."""
        code = self._poll_exit(timeout)
        if code is None:
            raise PeerError(f"peer did not exit within {timeout}s:\n{self.describe()}")
        gevent.joinall([self.stdout.reader, self.stderr.reader], timeout=timeout)
        return code

    def stop(self) -> None:
        """Kill the process (if it still runs), reap it, and end the reader greenlets."""
        self.close_stdin()
        if self.process.poll() is None:
            self.process.kill()
            self._poll_exit(DEFAULT_TIMEOUT)
        readers = [self.stdout.reader, self.stderr.reader]
        gevent.joinall(readers, timeout=2)
        gevent.killall(readers, timeout=2)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


class OpenSSLServer(Peer):
    """``openssl s_server`` on a port the kernel picks; ready once it printed ``ACCEPT``."""

    def __init__(self, openssl: str, args: Sequence[str], *, naccept: int = 1) -> None:
        super().__init__([openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", str(naccept), *args])
        try:
            match = self.wait_for(
                lambda: re.search(rb"^ACCEPT 127\.0\.0\.1:(\d+)\s*$", bytes(self.stdout.data), re.MULTILINE),
                "s_server to print ACCEPT",
            )
        except BaseException:
            self.stop()
            raise
        self.port = int(match.group(1))


def run_in_thread(fn: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Run blocking *fn* in a real OS thread while this greenlet waits on gevent."""
    return gevent.get_hub().threadpool.spawn(fn, *args).get(timeout=timeout)


class StdlibServer:
    """A plain stdlib `ssl` server in a real OS thread (not gevent) serving *connections* clients.

    ``handler(ssl_socket)`` runs for each accepted, handshaken connection in
    the thread; what it raises is kept in `errors`.  `stop` closes the
    listener and joins the thread (bounded).
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        handler: Callable[[ssl.SSLSocket], None],
        *,
        connections: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.context = context
        self.handler = handler
        self.connections = connections
        self.timeout = timeout
        self.errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.05)  # so the accept loop sees stop() promptly
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"stdlib-ssl-server:{self.port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + self.timeout
        served = 0
        try:
            while served < self.connections and not self._stopping.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError("no client connected in time")
                try:
                    raw, _ = self._listener.accept()
                except TimeoutError:
                    continue
                served += 1
                self._serve_one(raw)
        except BaseException as exc:  # noqa: BLE001 - reported to the test through self.errors
            self.errors.append(exc)
        finally:
            self._listener.close()

    def _serve_one(self, raw: socket.socket) -> None:
        raw.settimeout(self.timeout)
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except BaseException:
            raw.close()
            raise
        try:
            self.handler(conn)
        finally:
            conn.close()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait (on gevent) for the thread to serve its connections and end."""
        with gevent.Timeout(timeout, PeerError(f"stdlib server thread still running after {timeout}s")):
            while self._thread.is_alive():
                gevent.sleep(0.005)
        if self.errors:
            raise PeerError(f"stdlib server failed: {self.errors!r}") from self.errors[0]

    def stop(self) -> None:
        self._stopping.set()
        deadline = time.monotonic() + self.timeout + 1
        while self._thread.is_alive() and time.monotonic() < deadline:
            gevent.sleep(0.005)


class PeerGroup:
    """The peers one test started; `stop_all` (fixture teardown) ends every one of them."""

    def __init__(self) -> None:
        self._stoppable: list[Peer | StdlibServer] = []

    def process(self, argv: Sequence[str], *, stdin: bool = True) -> Peer:
        peer = Peer(argv, stdin=stdin)
        self._stoppable.append(peer)
        return peer

    def s_server(self, openssl: str, args: Sequence[str], *, naccept: int = 1) -> OpenSSLServer:
        server = OpenSSLServer(openssl, args, naccept=naccept)
        self._stoppable.append(server)
        return server

    def stdlib_server(
        self, context: ssl.SSLContext, handler: Callable[[ssl.SSLSocket], None], *, connections: int = 1
    ) -> StdlibServer:
        server = StdlibServer(context, handler, connections=connections)
        self._stoppable.append(server)
        return server

    def stop_all(self) -> None:
        while self._stoppable:
            self._stoppable.pop().stop()


@pytest.fixture
def openssl() -> str:
    """The openssl command-line tool (skips when it is missing)."""
    return require_binary("openssl")


@pytest.fixture
def peers() -> Iterator[PeerGroup]:
    """Peer processes and threads, all stopped at teardown."""
    group = PeerGroup()
    try:
        yield group
    finally:
        group.stop_all()
