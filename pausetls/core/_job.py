"""Jobs: one call into OpenSSL that may pause inside a callback.

This is pausetls's version of OpenSSL's ``ASYNC_start_job``/``ASYNC_pause_job``
(see ``../shared/DESIGN.md``), built on greenlet instead of ``makecontext``.
It imports no event loop: drivers (gevent, threads, later asyncio) decide how
a pause waits.

How a pause works
-----------------
A job wraps one C call such as ``SSL_do_handshake``.  OpenSSL calls back into
Python from inside it (certificate verification, ...).  When the callback has
to wait for the network, the greenlet that runs the C call is suspended *with
its C stack*: greenlet copies the stack slice out and back to the same
addresses, so OpenSSL finds its frames untouched when the callback returns.

A job runs in one of two ways:

* ``run_inline(waiter)``: in the caller's greenlet.  ``pause()`` calls the
  driver's ``waiter``; under gevent any plain blocking call (``gevent.sleep``,
  a gevent socket, ``AsyncResult.get()``) pauses the same way, by switching
  to the hub.  The gevent and threaded drivers use this.
* ``start()`` / ``resume()`` / ``throw()``: in a greenlet of its own.
  ``pause()`` switches back to the starter with a `Paused` request; the
  starter waits however its loop waits and resumes the job.  This is the
  shape an asyncio driver needs.

What a pause preserves
----------------------
* The OpenSSL error queue is per thread, not per greenlet.  `Job.run_callback`
  takes the queue out before user code runs and puts it back after, so a
  pause cannot leak errors between connections; each C call starts with an
  empty queue.
* Exceptions never cross the C boundary: `Job.run_callback` catches every
  ``BaseException`` (gevent's ``Timeout`` and ``GreenletExit`` included),
  records the first one, returns a failure to OpenSSL, and the caller
  re-raises it after the C call returns.  Once a job holds an exception,
  later callbacks in the same C call fail at once without running user code.
* Some hooks must never pause (the session-remove callback runs under the
  SSL_CTX lock): ``run_callback(pausable=False)`` marks them, and ``pause()``
  inside raises `PauseError` instead of deadlocking.
* Ownership of the SSL object during a pause is enforced by its owner (the
  TLS socket refuses other calls while a job is in flight).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Protocol

from greenlet import getcurrent, greenlet

from . import _live
from ._binding import drain_error_queue, lib, restore_error_queue
from .errors import PauseError

__all__ = ["CallbackCount", "Job", "JobState", "Paused", "Waiter", "current_job", "in_job", "pause"]


class Waiter(Protocol):
    """How a driver blocks the current job until *waitable* is ready.

    Returns the waitable's value; raises `pausetls.TimeoutError` after *timeout*.
    """

    def __call__(self, waitable: Any, timeout: float | None) -> Any: ...


class JobState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"


class Paused:
    """What a started job hands its starter when it pauses: wait for this, then resume."""

    __slots__ = ("timeout", "waitable")

    def __init__(self, waitable: Any, timeout: float | None) -> None:
        self.waitable = waitable
        self.timeout = timeout


_JOB_ATTRIBUTE = "pausetls_job"
"""The job a greenlet runs now is an attribute of the greenlet itself: no process-wide registry, and
it goes when the greenlet does.  Jobs nest (a verify callback may open another TLS connection), so
entering saves the previous one."""


def current_job() -> Job | None:
    """The job the calling greenlet runs, or None."""
    job: Job | None = getattr(getcurrent(), _JOB_ATTRIBUTE, None)
    return job


def in_job() -> bool:
    """True when called from code running inside a job (e.g. an OpenSSL callback)."""
    return getattr(getcurrent(), _JOB_ATTRIBUTE, None) is not None


class CallbackCount:
    """User callbacks running now (so paused, or maybe) in the jobs of one owner, e.g. one server.

    Not locked: its jobs run on one thread (a gevent server's hub), as `max_paused` needs.
    """

    __slots__ = ("running",)

    def __init__(self) -> None:
        self.running = 0


def pause(waitable: Any, timeout: float | None = None) -> Any:
    """Suspend the current job until *waitable* is ready; return its value.

    Raises `PauseError` outside a job or inside a hook that must not pause.
    """
    job = current_job()
    if job is None:
        raise PauseError("pause() called outside a job: only OpenSSL callbacks run in one")
    job.check_pausable()
    job.state = JobState.PAUSED
    try:
        if job._starter is not None:
            return job._starter.switch(Paused(waitable, timeout))
        if job.waiter is None:
            raise PauseError("this job has no waiter: run it with run_inline(waiter) or start()")
        return job.waiter(waitable, timeout)
    finally:
        job.state = JobState.RUNNING


class Job:
    """One call into OpenSSL, ``fn(*args)``, that may pause in a callback."""

    __slots__ = (
        "_finish_callbacks",
        "_forbidden",
        "_outer",
        "_starter",
        "args",
        "callbacks",
        "exception",
        "failed_callback",
        "fn",
        "greenlet",
        "owner",
        "result",
        "state",
        "waiter",
    )

    def __init__(
        self, fn: Callable[..., Any], *args: Any, owner: object = None, callbacks: CallbackCount | None = None
    ) -> None:
        self.fn = fn
        self.args = args
        self.owner = owner
        self.callbacks = callbacks  # counts this job's running callbacks with those of its owner's peers
        self.waiter: Waiter | None = None
        self.greenlet: greenlet | None = None
        self.state = JobState.NEW
        self.result: Any = None
        self.exception: BaseException | None = None
        self.failed_callback: str | None = None
        self._forbidden: str | None = None
        self._starter: greenlet | None = None
        self._outer: Job | None = None  # a joined job: the job it hides while it lasts (nested calls)
        self._finish_callbacks: list[Callable[[Job], None]] = []

    # -- running ---------------------------------------------------------

    def run_inline(self, waiter: Waiter | None) -> Any:
        """Run the call in the calling greenlet; pauses go through *waiter*."""
        self._expect(JobState.NEW)
        self.waiter = waiter
        self.greenlet = getcurrent()
        previous = self._enter()
        try:
            self.result = self.fn(*self.args)
        finally:
            self._leave(previous)
            # the caller's greenlet is not held past the call: under threads it is the thread's main
            # greenlet, which must not be released later from another thread (a garbage collection there)
            self.greenlet = None
        return self.result

    @classmethod
    def joined(
        cls, fn: Callable[..., Any], waiter: Waiter, *, owner: object, callbacks: CallbackCount | None, clear: bool
    ) -> Job:
        """The job of a C call the calling greenlet makes itself (`TLSSocket`'s fast path): entered now,
        left by `leave_joined` when the call has returned.  Pauses go through *waiter*.

        A connection makes one only when a callback runs inside its call (*clear* False: the error queue
        holds that call's errors), or before each call where another thread may close the connection
        meanwhile (*clear* True, as every job starts)."""
        job = cls(fn, owner=owner, callbacks=callbacks)
        job.waiter = waiter
        job.greenlet = getcurrent()
        job._outer = job._enter(clear)
        return job

    def leave_joined(self) -> None:
        """The C call a `joined` job belongs to has returned."""
        self._leave(self._outer)
        self._outer = None
        self.greenlet = None  # not held past the call (see run_inline)

    def start(self) -> Paused | None:
        """Run the call in a greenlet of its own until it pauses (`Paused`) or finishes (None)."""
        self._expect(JobState.NEW)
        self._starter = getcurrent()
        self.greenlet = greenlet(self._run_started)
        return self._switch_in(self.greenlet.switch)

    def resume(self, value: Any = None) -> Paused | None:
        """Continue a paused started job; *value* is what its ``pause()`` returns."""
        self._expect(JobState.PAUSED)
        assert self.greenlet is not None
        return self._switch_in(self.greenlet.switch, value)

    def throw(self, exc: BaseException) -> Paused | None:
        """Raise *exc* at the paused job's ``pause()`` (cancel it); callbacks fail closed."""
        self._expect(JobState.PAUSED)
        assert self.greenlet is not None
        return self._switch_in(self.greenlet.throw, exc)

    def _run_started(self) -> None:
        previous = self._enter()
        try:
            self.result = self.fn(*self.args)
        finally:
            self._leave(previous)

    def _switch_in(self, switch: Callable[..., Any], *args: Any) -> Paused | None:
        self._starter = getcurrent()
        outcome = switch(*args)
        return outcome if isinstance(outcome, Paused) else None

    def _enter(self, clear: bool = True) -> Job | None:
        assert self.greenlet is not None
        previous: Job | None = getattr(self.greenlet, _JOB_ATTRIBUTE, None)
        setattr(self.greenlet, _JOB_ATTRIBUTE, self)
        self.state = JobState.RUNNING
        _live.acquire("jobs")
        if clear:
            lib.ERR_clear_error()  # nothing else can be trusted to leave the queue empty
        return previous

    def _leave(self, previous: Job | None) -> None:
        assert self.greenlet is not None
        setattr(self.greenlet, _JOB_ATTRIBUTE, previous)
        self.state = JobState.FINISHED
        _live.release("jobs")
        callbacks, self._finish_callbacks = self._finish_callbacks, []
        for callback in callbacks:
            callback(self)

    def _expect(self, state: JobState) -> None:
        if self.state is not state:
            raise PauseError(f"job is {self.state.value}, expected {state.value}")

    # -- what drivers and callbacks use -----------------------------------

    @property
    def done(self) -> bool:
        return self.state is JobState.FINISHED

    def add_finish_callback(self, callback: Callable[[Job], None]) -> None:
        """Call *callback(job)* when the C call has returned (at once if it has)."""
        if self.done:
            callback(self)
        else:
            self._finish_callbacks.append(callback)

    @classmethod
    def refusing_pauses(cls, where: str) -> Job:
        """A job for callbacks OpenSSL makes outside any job of ours: running them works, pausing fails."""
        job = cls(lambda: None)
        job._forbidden = where
        return job

    def check_pausable(self) -> None:
        if self._forbidden is not None:
            raise PauseError(
                f"the {self._forbidden} callback must not pause: OpenSSL may hold a lock there "
                "(copy what you need and act from another greenlet)"
            )

    def run_callback(self, name: str, pausable: bool, fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """Run user callback *fn* from inside OpenSSL.  Never raises.

        Returns ``(True, value)``, or ``(False, None)`` when it raised (the
        exception is kept on the job for re-raising after the C call) or when
        an earlier callback of this job already failed.
        """
        if self.exception is not None:
            return False, None
        saved = drain_error_queue() if lib.ERR_peek_error() else None
        forbidden = self._forbidden
        if not pausable:
            self._forbidden = name
        _live.acquire("callbacks")  # a handshake inside a callback is (or may be) paused
        callbacks = self.callbacks
        if callbacks is not None:
            callbacks.running += 1
        try:
            return True, fn(*args)
        except BaseException as exc:  # noqa: BLE001 - must not cross into C
            self.exception = exc
            self.failed_callback = name
            return False, None
        finally:
            _live.release("callbacks")
            if callbacks is not None:
                callbacks.running -= 1
            self._forbidden = forbidden
            lib.ERR_clear_error()
            if saved:
                restore_error_queue(saved)
