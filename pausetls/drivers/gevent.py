"""The gevent driver: jobs pause by switching to the gevent hub.

A job runs inline in the calling greenlet, so any plain gevent blocking call
inside a callback (``gevent.sleep``, a gevent socket, ``AsyncResult.get()``)
pauses the handshake with no pausetls API at all; `pausetls.pause` works too.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import gevent
import gevent.socket
from gevent.event import Event
from gevent.hub import get_hub
from gevent.lock import BoundedSemaphore, Semaphore
from gevent.socket import wait as _wait_watcher

from ..core._job import Job
from ..core.errors import ClosedError, TimeoutError

__all__ = ["GeventDriver", "gevent_driver"]


class _GeventIO:
    """Read and write watchers on one file descriptor: a gevent socket's own, else made once per connection."""

    __slots__ = ("_hub", "_owned", "_read", "_write")

    def __init__(self, sock: Any) -> None:
        self._hub = get_hub()
        # a gevent socket has its pair already (private names, hence the fallback): no two more per connection
        read: Any = getattr(sock, "_read_event", None)
        write: Any = getattr(sock, "_write_event", None)
        self._owned = read is None or write is None
        if self._owned:
            read, write = self._hub.loop.io(sock.fileno(), 1), self._hub.loop.io(sock.fileno(), 2)
        self._read, self._write = read, write

    def wait_readable(self, timeout: float | None) -> None:
        _wait_io(self._read, timeout)

    def wait_writable(self, timeout: float | None) -> None:
        _wait_io(self._write, timeout)

    def close(self) -> None:
        for watcher in (self._read, self._write):
            if watcher.callback is not None:  # a greenlet waits on it: wake it with an error
                self._hub.cancel_wait(watcher, ClosedError("TLS socket was closed in another greenlet"))
            if self._owned:  # a socket's own stay its own: unwrap() hands the socket back, and it closes them
                watcher.close()


def _wait_io(watcher: Any, timeout: float | None) -> None:
    if timeout is None:
        _wait_watcher(watcher)  # no timeout, no exception object made for it: this is the data path
    else:
        _wait_watcher(watcher, timeout, TimeoutError("timed out"))


class GeventDriver:
    """Waits on the gevent hub."""

    name = "gevent"
    one_thread = True
    socket_module = gevent.socket

    def pending(self, value: Any) -> Any | None:
        """An ``AsyncResult``, ``Greenlet`` or anything with ``ready()`` and ``get()``; a gevent ``Event``;
        a ``concurrent.futures.Future`` (completed by a thread: waited for without blocking the hub)."""
        if isinstance(value, (Future, Event)):
            return value
        if callable(getattr(value, "ready", None)) and callable(getattr(value, "get", None)):
            return value
        return None

    def wait(self, waitable: Any, timeout: float | None) -> Any:
        """Wait for an AsyncResult/Future-like (``get``), an Event-like (``wait``), a Greenlet, or a
        ``concurrent.futures.Future``."""
        if isinstance(waitable, Future):
            return _wait_for_future(waitable, timeout)
        if hasattr(waitable, "get") and hasattr(waitable, "ready"):
            # our own timer raises TimeoutError; a gevent.Timeout from outside (a server's
            # handshake deadline) must pass through as itself, not pose as a pause timeout
            with gevent.Timeout(timeout, TimeoutError.after(timeout, "pause timed out")):
                return waitable.get()
        if not gevent.wait([waitable], timeout=timeout):
            raise TimeoutError.after(timeout, "pause timed out")
        return getattr(waitable, "value", None)

    def io_waiter(self, sock: Any) -> _GeventIO:
        return _GeventIO(sock)

    def lock(self) -> Semaphore:
        return Semaphore()

    def semaphore(self, size: int) -> BoundedSemaphore:
        return BoundedSemaphore(size)

    def call_with_timeout(self, fn: Callable[..., Any], timeout: float, *args: Any) -> Any:
        with gevent.Timeout(timeout, TimeoutError.after(timeout)):
            return fn(*args)

    def defer(self, fn: Callable[..., Any], *args: Any) -> None:
        gevent.spawn(fn, *args)

    def cancel(self, job: Job, exc: BaseException, timeout: float | None) -> bool:
        if job.done:
            return True
        finished = Event()
        job.add_finish_callback(lambda _job: finished.set())
        assert job.greenlet is not None
        # what gevent.kill does: raise in the paused greenlet from the hub
        get_hub().loop.run_callback(job.greenlet.throw, exc)
        return bool(finished.wait(timeout))


def _wait_for_future(future: Future[Any], timeout: float | None) -> Any:
    """A thread's future, waited for on the hub: the thread that completes it wakes this greenlet
    through the loop's thread-safe callback queue (a gevent Event is not to be set from another thread)."""
    if not future.done():
        done = Event()
        loop = get_hub().loop
        future.add_done_callback(lambda _future: loop.run_callback_threadsafe(done.set))
        if not done.wait(timeout):
            raise TimeoutError.after(timeout, "pause timed out")
    return future.result()


gevent_driver = GeventDriver()
