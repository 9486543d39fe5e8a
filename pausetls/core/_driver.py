"""What the core needs from an event loop (or from threads): the driver interface.

A driver owns every loop decision; the core (binding, jobs, `Context`,
`TLSSocket`, the OpenSSL callbacks) only calls these methods, through the
connection's ``driver`` attribute, and imports no loop.  See ``docs/DESIGN.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any, Protocol

from ._job import Job

__all__ = ["Driver", "IOWaiter", "Semaphore"]


class IOWaiter(Protocol):
    """Waits for one socket's readiness on behalf of one TLS connection."""

    def wait_readable(self, timeout: float | None) -> None:
        """Block the caller until readable; raise `pausetls.TimeoutError` after *timeout*."""

    def wait_writable(self, timeout: float | None) -> None:
        """Block the caller until writable; raise `pausetls.TimeoutError` after *timeout*."""

    def close(self) -> None:
        """Wake every waiter with `pausetls.ClosedError` and release the watchers."""


class Semaphore(Protocol):
    """A bounded semaphore whose waits block only the caller (a greenlet, a thread)."""

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool: ...

    def release(self) -> None: ...


class Driver(Protocol):
    """How jobs and sockets wait.  gevent and threads implement it; nothing here imports them."""

    name: str
    #: True when a connection's calls and its close all run on one OS thread (an event loop): nothing
    #: else runs while a C call that does not call back is in flight, so the connection makes that
    #: call's `Job` only if a callback runs inside it.  False (threads): every call is made a job first,
    #: so a close from another thread can wait for it.
    one_thread: bool

    @property
    def socket_module(self) -> ModuleType:
        """What helpers and stores make sockets with (the ``socket`` module's API)."""

    def pending(self, value: Any) -> Any | None:
        """*value* as something `wait` can wait for if it is a result still to come (a future, an
        ``AsyncResult``...), else None: it is a plain value.  A callback's result passes through this."""

    def wait(self, waitable: Any, timeout: float | None) -> Any:
        """Block the current job until *waitable* (what `pending` answered) is ready; return its value."""

    def io_waiter(self, sock: Any) -> IOWaiter:
        """A waiter for *sock*'s file descriptor."""

    def lock(self) -> AbstractContextManager[Any]:
        """A non-reentrant lock (``with lock:``); waiting for it blocks only the caller (a greenlet, a thread)."""

    def semaphore(self, size: int) -> Semaphore:
        """A bounded semaphore of *size* (a store's connection slots)."""

    def call_with_timeout(self, fn: Callable[..., Any], timeout: float, *args: Any) -> Any:
        """``fn(*args)``, raising `pausetls.TimeoutError` if it runs past *timeout* (where it can be cut)."""

    def defer(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` later, outside the current call (a greenlet, a worker thread)."""

    def cancel(self, job: Job, exc: BaseException, timeout: float | None) -> bool:
        """Raise *exc* where *job* is paused and wait until its C call has returned.

        Returns False if it had not returned within *timeout*.
        """
