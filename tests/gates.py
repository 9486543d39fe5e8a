"""Proof of overlap without timing: callbacks wait at a gate until N of them are inside at once.

If the callbacks ran one after another, the first would wait at the gate for
ever: it gives up after a generous *timeout* and the test fails, naming how
many ever got in together.  Nothing here depends on how fast or how loaded
the machine is: the gate opens on a count, not on a clock.

Generous wall-time ceilings live here too, so every test states its bound
the same way ("well under what one after another would take").
"""

from __future__ import annotations

import threading
from typing import Any

import gevent.event

__all__ = ["Gate", "ThreadGate", "GENEROUS", "serial_ceiling"]

GENEROUS = 60.0
"""Seconds a test waits for something that takes well under a second on an idle machine."""


def serial_ceiling(count: int, pause: float) -> float:
    """A wall-time ceiling for *count* pauses of *pause* seconds that overlapped: half of doing them in
    turn, and never below `GENEROUS` -- only pauses taken one after another can reach it."""
    return max(GENEROUS, count * pause / 2)


class Gate:
    """Greenlets `arrive` and wait until *expected* of them are inside; then all go on at once."""

    def __init__(self, expected: int, timeout: float = GENEROUS) -> None:
        self.expected = expected
        self.timeout = timeout
        self.inside = 0
        self.most_inside = 0
        self.timed_out = False
        self._open = self._new_event()

    def _new_event(self) -> Any:
        return gevent.event.Event()

    def arrive(self) -> None:
        """Wait inside until *expected* arrived (raises `AssertionError` after *timeout*)."""
        self._enter()
        try:
            if not self._open.wait(self.timeout):
                self.timed_out = True
                raise AssertionError(self.why())
        finally:
            self._leave()

    def _enter(self) -> None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        if self.inside >= self.expected:
            self._open.set()

    def _leave(self) -> None:
        self.inside -= 1

    @property
    def opened(self) -> bool:
        return bool(self._open.is_set())

    def why(self) -> str:
        return f"only {self.most_inside} of {self.expected} were ever inside at once: they did not overlap"


class ThreadGate(Gate):
    """`Gate` for OS threads (the threaded server's blocking callbacks)."""

    def __init__(self, expected: int, timeout: float = GENEROUS) -> None:
        self._lock = threading.Lock()
        super().__init__(expected, timeout)

    def _new_event(self) -> Any:
        return threading.Event()

    def _enter(self) -> None:
        with self._lock:
            super()._enter()

    def _leave(self) -> None:
        with self._lock:
            super()._leave()


class AsyncGate(Gate):
    """`Gate` for asyncio tasks: ``await gate.arrive()``."""

    def _new_event(self) -> Any:
        import asyncio

        return asyncio.Event()

    async def arrive(self) -> None:  # type: ignore[override]
        import asyncio

        self._enter()
        try:
            async with asyncio.timeout(self.timeout):
                await self._open.wait()
        except TimeoutError:
            self.timed_out = True
            raise AssertionError(self.why()) from None
        finally:
            self._leave()
