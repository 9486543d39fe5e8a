"""Pre-fork workers: N processes serving one listening socket, supervised by the parent.

The parent binds the socket and makes everything the workers must share
(certificates, session sealing keys) before forking, so sessions a worker
seals can be opened by any other worker through a shared store.

The parent then supervises, and nothing more (gunicorn is the production
arbiter): a worker that dies is restarted after an exponential backoff,
capped, and reset once a worker has lived `RestartPolicy.stable_after`
seconds.  A crash loop stops the server with a non-zero exit code: a worker
number whose workers died `RestartPolicy.max_start_failures` times in a row
before serving (a broken start-up), or died more than `RestartPolicy.max_deaths`
times within `RestartPolicy.window`.  SIGINT/SIGTERM are forwarded to the workers as SIGTERM;
workers still running `stop_timeout` seconds later are killed.  Workers leave
when the parent dies (`pausetls.servers._parent_watch`).

Exit codes follow the shell: a worker killed by signal N counts as 128 + N,
so a signal death never reads as success.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gevent.os

from ._parent_watch import leave_when_parent_dies

__all__ = ["run_workers", "RestartPolicy", "Serve", "exit_code"]

log = logging.getLogger("pausetls.prefork")

#: ``serve(worker_number, ready)`` runs one worker and returns its exit code; it calls
#: ``ready()`` once it serves and handles SIGTERM (stop signals stay blocked until then).
Serve = Callable[[int, Callable[[], None]], int]

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_PID = struct.Struct("=i")  # what a worker writes to the ready pipe (atomic: shorter than PIPE_BUF)


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead worker is restarted, and when the supervisor gives up."""

    first_backoff: float = 0.1  # seconds before restarting a worker that died after a stable run
    max_backoff: float = 10.0  # the backoff doubles with each quick death, up to this
    stable_after: float = 30.0  # a worker that lived this long resets its backoff
    max_deaths: int = 5  # more deaths than this of one worker number within `window`: a crash loop
    window: float = 60.0
    max_start_failures: int = 3  # this many deaths in a row before serving: a crash loop

    def backoff(self, quick_deaths: int) -> float:
        """Seconds to wait before the next start after *quick_deaths* (>= 1) deaths in a row."""
        return float(min(self.max_backoff, self.first_backoff * 2 ** (quick_deaths - 1)))


def exit_code(status: int) -> int:
    """A `waitpid` status as a shell exit code: 128 + N for a death by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def run_workers(count: int, serve: Serve, *, policy: RestartPolicy | None = None, stop_timeout: float = 30.0) -> int:
    """Fork *count* workers running ``serve(worker_number, ready)`` and supervise them until
    SIGINT/SIGTERM or a failure; return the exit code (0 only if every worker stopped cleanly)."""
    return _Supervisor(count, serve, policy or RestartPolicy(), stop_timeout).run()


@dataclass
class _Slot:
    """One worker number and the process currently running it."""

    number: int
    pid: int | None = None
    started: float = 0.0
    serving: bool = False
    quick_deaths: int = 0  # deaths in a row of workers that lived less than stable_after
    start_failures: int = 0  # deaths in a row before serving
    deaths: deque[float] = field(default_factory=deque)  # when, within the policy's window
    restart_at: float | None = None


class _Supervisor:
    def __init__(self, count: int, serve: Serve, policy: RestartPolicy, stop_timeout: float) -> None:
        self.slots = [_Slot(number) for number in range(count)]
        self.serve = serve
        self.policy = policy
        self.stop_timeout = stop_timeout
        self.pid = os.getpid()
        self.stop_signal: int | None = None
        self.failure: int | None = None  # the exit code, once the supervisor gives up
        self.final_codes: list[int] = []  # exit codes of workers that died once the server was stopping

    # -- the parent ----------------------------------------------------------

    def run(self) -> int:
        self._ready_r, self._ready_w = _pipe()
        self._wake_r, self._wake_w = _pipe()
        try:
            with self._signals():
                for slot in self.slots:
                    self._start(slot)
                while self.stop_signal is None and self.failure is None:
                    self._wait_for_events(self._next_restart())
                    self._collect()
                    self._restart_due()
                if self.stop_signal is not None:
                    log.info("%s: stopping %d workers", signal.Signals(self.stop_signal).name, self._running())
                return self._stop_all()
        finally:
            for fd in (self._ready_r, self._ready_w, self._wake_r, self._wake_w):
                os.close(fd)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """Stop signals set a flag; every signal (SIGCHLD included) wakes the loop through a pipe."""

        def stop(signum: int, frame: Any) -> None:
            if self.stop_signal is None:
                self.stop_signal = signum

        previous = {signum: signal.signal(signum, stop) for signum in _STOP_SIGNALS}
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        # SIGHUP (reload the ticket keys) is the workers' business: pass it on
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda signum, frame: self._signal_workers(signum))
        previous_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for signum, action in previous.items():
                signal.signal(signum, action)

    def _start(self, slot: _Slot, after: float | None = None) -> None:
        # Stop signals and SIGCHLD stay blocked across fork: the child must not run the parent's
        # handlers, and a stop signal sent early reaches the worker once it can stop gracefully.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {*_STOP_SIGNALS, signal.SIGCHLD, signal.SIGHUP})
        try:
            pid = gevent.os.fork_gevent()  # re-initialises gevent's hub in the child
            if pid == 0:
                self._run_worker(slot.number, mask)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        slot.pid, slot.started, slot.serving, slot.restart_at = pid, time.monotonic(), False, None
        if after is None:
            log.info("worker %d (pid %d) started", slot.number, pid)
        else:
            log.info("worker %d (pid %d) restarted after %.1f s", slot.number, pid, after)

    def _wait_for_events(self, deadline: float | None) -> None:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([self._wake_r, self._ready_r], [], [], timeout)
        if self._wake_r in readable:
            _drain(self._wake_r)

    def _collect(self) -> None:
        """Note the workers now serving, then reap the dead (in that order: one that became ready
        and died at once was serving)."""
        for pid in _pids(_drain(self._ready_r)):
            slot = self._slot_of(pid)
            if slot is not None:
                slot.serving, slot.start_failures = True, 0
                log.info("worker %d (pid %d) serving", slot.number, pid)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self._slot_of(pid)
            if slot is not None:
                self._died(slot, status)

    def _died(self, slot: _Slot, status: int) -> None:
        now = time.monotonic()
        lived, serving = now - slot.started, slot.serving
        log.warning("worker %d (pid %d) died: %s", slot.number, slot.pid, describe_exit(status))
        slot.pid = None
        if self.stop_signal is not None or self.failure is not None:
            self.final_codes.append(exit_code(status))
            return
        slot.deaths.append(now)
        while slot.deaths and slot.deaths[0] < now - self.policy.window:
            slot.deaths.popleft()
        slot.start_failures = 0 if serving else slot.start_failures + 1
        if slot.start_failures >= self.policy.max_start_failures:
            self._give_up(status, f"worker {slot.number} died {slot.start_failures} times in a row before serving")
        elif len(slot.deaths) > self.policy.max_deaths:
            self._give_up(status, f"worker {slot.number} died {len(slot.deaths)} times in {self.policy.window:g} s")
        else:
            slot.quick_deaths = 1 if lived >= self.policy.stable_after else slot.quick_deaths + 1
            slot.restart_at = now + self.policy.backoff(slot.quick_deaths)

    def _give_up(self, status: int, why: str) -> None:
        self.failure = exit_code(status) or 1  # a worker that exits 0 on its own is still a failure
        log.error("%s: stopping the server (exit code %d)", why, self.failure)

    def _next_restart(self) -> float | None:
        return min((slot.restart_at for slot in self.slots if slot.restart_at is not None), default=None)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now and self.stop_signal is None:
                self._start(slot, after=self.policy.backoff(slot.quick_deaths))

    def _running(self) -> int:
        return sum(slot.pid is not None for slot in self.slots)

    def _stop_all(self) -> int:
        """SIGTERM every worker, wait up to stop_timeout, then SIGKILL the rest; the exit code."""
        for slot in self.slots:
            slot.restart_at = None
        self._signal_workers(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while self._running() and time.monotonic() < deadline:
            self._wait_for_events(deadline)
            self._collect()
        if self._running():
            log.error("%d workers still running %g s after SIGTERM: killing them", self._running(), self.stop_timeout)
            self._signal_workers(signal.SIGKILL)
            while self._running():
                self._wait_for_events(None)
                self._collect()
        if self.failure is not None:
            return self.failure
        return max(self.final_codes, default=0)

    def _signal_workers(self, signum: int) -> None:
        for slot in self.slots:
            if slot.pid is not None:
                try:
                    os.kill(slot.pid, signum)
                except ProcessLookupError:  # dead, not reaped yet
                    pass

    def _slot_of(self, pid: int) -> _Slot | None:
        return next((slot for slot in self.slots if slot.pid == pid), None)

    # -- the child -------------------------------------------------------------

    def _run_worker(self, number: int, mask: set[int | signal.Signals]) -> None:
        """The child's whole life: it never returns into the supervisor's code."""
        code = 1
        try:
            self._forget_supervisor()
            leave_when_parent_dies(self.pid)
            code = self.serve(number, lambda: self._ready(mask))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # anything, logged: it ends this worker only
            log.exception("worker %d (pid %d) failed", number, os.getpid())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _forget_supervisor(self) -> None:
        """Undo the parent's signal handling and close its pipes (stop signals and SIGHUP stay blocked)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # the worker's own handler comes before it is ready
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        for fd in (self._ready_r, self._wake_r, self._wake_w):
            os.close(fd)

    def _ready(self, mask: set[int | signal.Signals]) -> None:
        """Tell the parent this worker serves; stop signals reach its own handlers from now on."""
        if self._ready_w < 0:  # said already
            return
        os.write(self._ready_w, _PID.pack(os.getpid()))
        os.close(self._ready_w)
        self._ready_w = -1
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _pipe() -> tuple[int, int]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    return read, write


def _drain(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def _pids(data: bytes) -> list[int]:
    return [pid for (pid,) in _PID.iter_unpack(data[: len(data) - len(data) % _PID.size])]
