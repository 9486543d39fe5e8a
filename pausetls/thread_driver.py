"""The threaded driver: a job "pauses" by blocking its OS thread.

Callbacks block the thread (``time.sleep``, blocking sockets, waiting on a
``threading.Event`` or a ``concurrent.futures.Future``).  It imports no event
loop, which also makes it the proof that the core does not need one.
"""

from __future__ import annotations

import builtins
import os
import select
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._job import Job
from .errors import ClosedError, TimeoutError

__all__ = ["ThreadDriver", "thread_driver"]


class _PollIO:
    """Readiness waits with poll(2) on one descriptor; close() wakes waiters through a pipe."""

    __slots__ = ("_closed", "_fd", "_wake_r", "_wake_w")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False

    def _wait(self, events: int, timeout: float | None) -> None:
        if self._closed:
            raise ClosedError()
        poller = select.poll()
        poller.register(self._fd, events)
        poller.register(self._wake_r, select.POLLIN)
        ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
        if self._closed:
            raise ClosedError("TLS socket was closed in another thread")
        if not ready:
            raise TimeoutError("timed out")

    def wait_readable(self, timeout: float | None) -> None:
        self._wait(select.POLLIN, timeout)

    def wait_writable(self, timeout: float | None) -> None:
        self._wait(select.POLLOUT, timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        os.close(self._wake_w)
        os.close(self._wake_r)


class ThreadDriver:
    """Blocks the calling thread."""

    name = "threads"

    def __init__(self, deferred_workers: int = 8) -> None:
        self._deferred = ThreadPoolExecutor(deferred_workers, thread_name_prefix="pausetls-deferred")

    def wait(self, waitable: Any, timeout: float | None) -> Any:
        """Wait for a Future-like (``result``) or an Event-like (``wait``)."""
        if hasattr(waitable, "result"):
            try:
                return waitable.result(timeout=timeout)
            except builtins.TimeoutError as exc:  # concurrent.futures.TimeoutError
                raise TimeoutError("pause timed out") from exc
        if not waitable.wait(timeout):
            raise TimeoutError("pause timed out")
        return None

    def io_waiter(self, sock: Any) -> _PollIO:
        return _PollIO(sock.fileno())

    def lock(self) -> threading.Lock:
        return threading.Lock()

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
