"""The asyncio driver: pausetls's synchronous core runs in greenlets that await on the event loop.

Each TLS call of an asyncio connection (handshake, read, write, close) runs
``await greenlet_spawn(fn, *args)``: *fn* (the same `TLSSocket` code the gevent
and threaded drivers run) executes in a greenlet of its own, and wherever it
would block -- a callback's pending result, a socket readiness wait, a lock --
`await_only(awaitable)` switches back to the task, which awaits and switches
in again with the result (or throws the exception in).  This is SQLAlchemy's
``greenlet_spawn``/``await_only`` bridge; the job runtime is unchanged.

Cancelling the task (``task.cancel()``, ``asyncio.timeout``) throws
`asyncio.CancelledError` in at the pause: a callback that was paused fails
closed (the handshake fails with the callback's alert) and the cancellation
then goes on out of the task.  Imports neither gevent nor threads.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from greenlet import getcurrent, greenlet

from ..core._job import Job
from ..core.errors import ClosedError, ConnectionBusyError, PauseError, TimeoutError

__all__ = ["AsyncioDriver", "asyncio_driver", "await_only", "greenlet_spawn", "in_bridge"]

log = logging.getLogger("pausetls.asyncio")


class _Bridge(greenlet):  # type: ignore[misc]
    """A greenlet running synchronous pausetls code for one asyncio task."""

    def __init__(self, run: Callable[..., Any], parent: greenlet, task: asyncio.Task[Any] | None) -> None:
        super().__init__(run, parent)
        self.task = task
        self.deadline: float | None = None  # loop time by which every await must finish (call_with_timeout)


def in_bridge() -> bool:
    """True in code that `greenlet_spawn` runs (where `await_only` works)."""
    return isinstance(getcurrent(), _Bridge)


def await_only(awaitable: Awaitable[Any]) -> Any:
    """From synchronous code run by `greenlet_spawn`: await *awaitable* in the task and return its result."""
    if not in_bridge():
        raise PauseError("await_only() outside pausetls.asyncio: only code run by greenlet_spawn can await")
    # no greenlet in a local: a traceback through here must not hold the loop thread's greenlets (`TLSSocket._call`)
    return getcurrent().parent.switch(awaitable)


async def greenlet_spawn(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a greenlet; each `await_only` inside is awaited here, in the calling task."""
    bridge = _Bridge(fn, getcurrent(), asyncio.current_task())
    try:
        request = bridge.switch(*args)
        while not bridge.dead:
            try:
                value = await _before_deadline(request, bridge.deadline)
            except BaseException as exc:  # noqa: BLE001 - cancellation included: the sync code decides
                request = bridge.throw(exc)
            else:
                request = bridge.switch(value)
        return request
    finally:
        del bridge  # not kept by a traceback past the loop's thread (see await_only)


async def _before_deadline(awaitable: Awaitable[Any], deadline: float | None, message: str = "timed out") -> Any:
    """Await *awaitable* until loop time *deadline* (None: no bound); past it, pausetls's `TimeoutError`."""
    if deadline is None:
        return await awaitable
    try:
        async with asyncio.timeout_at(deadline):
            return await awaitable
    except builtins.TimeoutError as exc:
        if isinstance(exc, TimeoutError):
            raise  # a pausetls timeout from inside (a store's own) stays what it is
        raise TimeoutError(message) from exc


async def _within(awaitable: Awaitable[Any], timeout: float | None, message: str) -> Any:
    """`_before_deadline` *timeout* seconds from now (as ``asyncio.timeout`` counts them)."""
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    return await _before_deadline(awaitable, deadline, message)


def _as_awaitable(waitable: Any) -> Awaitable[Any]:
    if isinstance(waitable, concurrent.futures.Future):
        return asyncio.wrap_future(waitable)
    if inspect.isawaitable(waitable):
        return waitable
    raise TypeError(f"cannot wait for {type(waitable).__name__} under asyncio: give a coroutine or a future")


class _AsyncioIO:
    """Readiness of one socket through ``loop.add_reader``/``add_writer``; any number of waiters per direction."""

    __slots__ = ("_closed", "_fd", "_loop", "_readers", "_writers")

    def __init__(self, sock: Any) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = sock.fileno()
        self._readers: list[asyncio.Future[None]] = []
        self._writers: list[asyncio.Future[None]] = []
        self._closed = False

    def wait_readable(self, timeout: float | None) -> None:
        self._wait(self._readers, self._loop.add_reader, self._loop.remove_reader, timeout)

    def wait_writable(self, timeout: float | None) -> None:
        self._wait(self._writers, self._loop.add_writer, self._loop.remove_writer, timeout)

    def _wait(
        self,
        waiters: list[asyncio.Future[None]],
        watch: Callable[..., Any],
        unwatch: Callable[[int], Any],
        timeout: float | None,
    ) -> None:
        if self._closed:
            raise ClosedError()
        ready = self._loop.create_future()
        if not waiters:
            watch(self._fd, self._wake, waiters, unwatch)
        waiters.append(ready)
        try:
            await_only(_within(ready, timeout, "timed out"))
        finally:
            if ready in waiters:
                waiters.remove(ready)
                if not waiters and not self._closed:
                    unwatch(self._fd)

    def _wake(self, waiters: list[asyncio.Future[None]], unwatch: Callable[[int], Any]) -> None:
        unwatch(self._fd)
        woken, waiters[:] = list(waiters), []
        for ready in woken:
            if not ready.done():
                ready.set_result(None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for waiters, unwatch in ((self._readers, self._loop.remove_reader), (self._writers, self._loop.remove_writer)):
            if waiters and not self._loop.is_closed():
                unwatch(self._fd)
            woken, waiters[:] = list(waiters), []
            for ready in woken:
                if not ready.done():
                    ready.set_exception(ClosedError("TLS socket was closed by another task"))


class _BridgeSemaphore:
    """A counting semaphore for bridged code: a holder beyond *size* awaits its turn in its own task.
    ``lock()`` is the one of size 1 (not reentrant)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        while self._free <= 0:
            if not blocking:
                return False
            turn = asyncio.get_running_loop().create_future()
            self._waiters.append(turn)
            try:
                await_only(_within(turn, timeout, "semaphore wait timed out"))
            except TimeoutError:
                return False
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._wake_next()  # woken, then cancelled: pass the turn on
                raise
            finally:
                if turn in self._waiters:
                    self._waiters.remove(turn)
        self._free -= 1
        return True

    def release(self) -> None:
        self._free += 1
        self._wake_next()

    def __enter__(self) -> _BridgeSemaphore:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _wake_next(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return


class AsyncioDriver:
    """Waits by awaiting on the running event loop (default loop or uvloop)."""

    name = "asyncio"
    one_thread = True

    def __init__(self) -> None:
        self._deferred: set[asyncio.Task[Any]] = set()  # strong references: the loop keeps only weak ones

    def pending(self, value: Any) -> Any | None:
        """A hook's result to wait for: a coroutine (``async def`` hooks), a future, any awaitable."""
        return value if inspect.isawaitable(value) or isinstance(value, concurrent.futures.Future) else None

    @property
    def socket_module(self) -> ModuleType:
        """Blocking sockets would stop the loop: the networked stores and helpers that make their own
        sockets have asyncio counterparts instead (`pausetls.stores.asyncio_stores`)."""
        raise TypeError(
            "this needs sockets of its own, which would block the event loop under asyncio: use "
            "pausetls.stores.asyncio_stores (AsyncioRedisStore, AsyncioMemcachedStore) or MemoryStore"
        )

    def wait(self, waitable: Any, timeout: float | None) -> Any:
        return await_only(_within(_as_awaitable(waitable), timeout, f"pause timed out after {timeout} s"))

    def io_waiter(self, sock: Any) -> _AsyncioIO:
        return _AsyncioIO(sock)

    def lock(self) -> _BridgeSemaphore:
        return _BridgeSemaphore(1)

    def semaphore(self, size: int) -> _BridgeSemaphore:
        return _BridgeSemaphore(size)

    def call_with_timeout(self, fn: Callable[..., Any], timeout: float, *args: Any) -> Any:
        """Every await inside ``fn(*args)`` must finish within *timeout* (plain computation is not cut)."""
        current = getcurrent()
        if not isinstance(current, _Bridge):
            return fn(*args)
        previous = current.deadline
        deadline = asyncio.get_running_loop().time() + timeout
        current.deadline = deadline if previous is None else min(previous, deadline)
        try:
            return fn(*args)
        except TimeoutError as exc:
            if current.deadline != deadline or asyncio.get_running_loop().time() < deadline:
                raise  # an outer deadline, or a limit of fn's own
            raise TimeoutError.after(timeout) from exc
        finally:
            current.deadline = previous
            del current  # not kept by a traceback past the loop's thread (see await_only)

    def defer(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # e.g. a session remove from SSL_CTX_free after the loop ended
            log.debug("deferred %s dropped: no running event loop", getattr(fn, "__qualname__", fn))
            return
        task = loop.create_task(greenlet_spawn(fn, *args))
        self._deferred.add(task)
        task.add_done_callback(self._deferred.discard)

    def cancel(self, job: Job, exc: BaseException, timeout: float | None) -> bool:
        """Cancel the task awaiting *job*'s pause; from bridged code, also wait for the C call to return.

        Elsewhere nothing may block, so it refuses (after asking for the cancellation) rather than let the
        caller free an SSL object a paused C call still uses: close asyncio connections with ``await aclose()``.
        """
        if job.done:
            return True
        bridge = job.greenlet
        if isinstance(bridge, _Bridge) and bridge.task is not None:
            bridge.task.cancel()
        if not in_bridge():
            raise ConnectionBusyError("a paused asyncio handshake is being cancelled: close it with await aclose()")
        finished = asyncio.get_running_loop().create_future()
        job.add_finish_callback(lambda _job: _settle(finished))
        try:
            await_only(_within(asyncio.shield(finished), timeout, "cancel timed out"))
        except TimeoutError:
            return False
        return True


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


asyncio_driver = AsyncioDriver()
