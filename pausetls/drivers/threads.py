"""The threaded driver: a job "pauses" by blocking its OS thread.

Callbacks block the thread (``time.sleep``, blocking sockets, waiting on a
``threading.Event`` or a ``concurrent.futures.Future``).  It imports no event
loop, which also makes it the proof that the core does not need one.
"""

from __future__ import annotations

import builtins
import select
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..core._job import Job
from ..core.errors import ClosedError, TimeoutError

__all__ = ["ThreadDriver", "thread_driver"]


class _PollIO:
    """Readiness waits with poll(2) on the socket alone: a connection costs its one descriptor.

    close() from another thread wakes a waiter by shutting the socket down: only the read side
    under a reader, so its owner can still send close_notify; both sides under a writer (a peer
    that does not read would not get one anyway).  The shutdown is a state poll(2) sees, so a
    waiter that starts polling after it returns at once.
    """

    __slots__ = ("_closed", "_lock", "_sock", "_waiting")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._waiting = {select.POLLIN: 0, select.POLLOUT: 0}  # threads in poll(), by direction
        self._closed = False

    def _wait(self, events: int, timeout: float | None) -> None:
        with self._lock:  # checked and counted together with close()'s flag and look at the count
            if self._closed:
                raise ClosedError()
            self._waiting[events] += 1
        try:
            poller = select.poll()
            poller.register(self._sock.fileno(), events)
            ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
        finally:
            with self._lock:
                self._waiting[events] -= 1
        if self._closed:
            raise ClosedError("TLS socket was closed in another thread")
        if not ready:
            raise TimeoutError("timed out")

    def wait_readable(self, timeout: float | None) -> None:
        self._wait(select.POLLIN, timeout)

    def wait_writable(self, timeout: float | None) -> None:
        self._wait(select.POLLOUT, timeout)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writing, reading = self._waiting[select.POLLOUT], self._waiting[select.POLLIN]
        if not (writing or reading):
            return  # nobody to wake: the socket is left as it is (unwrap() hands it back)
        try:
            self._sock.shutdown(socket.SHUT_RDWR if writing else socket.SHUT_RD)
        except OSError:
            pass  # already disconnected: the waiter's poll has returned


class ThreadDriver:
    """Blocks the calling thread."""

    name = "threads"
    one_thread = False
    socket_module = socket

    def __init__(self, deferred_workers: int = 8) -> None:
        self._deferred = ThreadPoolExecutor(deferred_workers, thread_name_prefix="pausetls-deferred")

    def pending(self, value: Any) -> Any | None:
        """A ``concurrent.futures.Future`` (what an executor hands out); nothing else is a pending result."""
        return value if isinstance(value, Future) else None

    def wait(self, waitable: Any, timeout: float | None) -> Any:
        """Wait for a Future-like (``result``) or an Event-like (``wait``)."""
        if hasattr(waitable, "result"):
            try:
                return waitable.result(timeout=timeout)
            except builtins.TimeoutError as exc:  # concurrent.futures.TimeoutError
                raise TimeoutError.after(timeout, "pause timed out") from exc
        if not waitable.wait(timeout):
            raise TimeoutError.after(timeout, "pause timed out")
        return None

    def io_waiter(self, sock: Any) -> _PollIO:
        return _PollIO(sock)

    def lock(self) -> threading.Lock:
        return threading.Lock()

    def semaphore(self, size: int) -> threading.BoundedSemaphore:
        return threading.BoundedSemaphore(size)

    def call_with_timeout(self, fn: Callable[..., Any], timeout: float, *args: Any) -> Any:
        # a thread cannot be interrupted: the store's own socket timeouts bound the call
        return fn(*args)

    def defer(self, fn: Callable[..., Any], *args: Any) -> None:
        self._deferred.submit(fn, *args)

    def cancel(self, job: Job, exc: BaseException, timeout: float | None) -> bool:
        # An OS thread cannot be interrupted: wait for its C call to return.
        finished = threading.Event()
        job.add_finish_callback(lambda _job: finished.set())
        return finished.wait(timeout)  # the owner may already have finished


thread_driver = ThreadDriver()
