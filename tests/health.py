"""The ``watch`` fixture: what would go wrong silently in a gevent server, and the server's log lines.

An exception nobody caught reaches gevent's hub, which prints it and goes
on; an exception in a cffi callback body is logged by pausetls and turned
into a failure value.  `Watch` records both (a test fails if either
happened) and counts the lines of the ``pausetls.server`` logger, so a test
can say "exactly one more failure: this counter, one log line".

conftest imports the fixture for every test module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gevent
import pytest

from gates import GENEROUS


@dataclass
class Mark:
    """The server's counters and the number of server log lines at one moment."""

    stats: dict[str, int]
    lines: int


class Watch:
    """Errors that reached gevent's hub, internal errors logged by pausetls, and the server's log lines."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.hub_errors: list[str] = []

    def record_hub_error(self, context: Any, exc_type: Any, value: Any, tb: Any) -> None:
        self.hub_errors.append(f"{context!r}: {exc_type.__name__}: {value}")

    def lines(self) -> list[str]:
        return [r.getMessage() for r in self.caplog.records if r.name == "pausetls.server"]

    def mark(self, server: Any) -> Mark:
        return Mark(server.stats.as_dict(), len(self.lines()))

    def failures(
        self,
        server: Any,
        since: Mark,
        count: int = 1,
        counter: str | tuple[str, ...] = "handshakes_failed",
        settle: float = 0.05,
    ) -> list[str]:
        """Exactly *count* more failures on *server* since *since*: *counter* (or the sum of several) went
        up by *count*, and as many new log lines.  Returns those lines."""
        counters = (counter,) if isinstance(counter, str) else counter
        expected = sum(since.stats[name] for name in counters) + count

        def now() -> int:
            return sum(getattr(server.stats, name) for name in counters)

        with gevent.Timeout(GENEROUS, False):
            while now() < expected:
                gevent.sleep(0.01)
        gevent.sleep(settle)  # long enough for one failure (or log line) too many to show up
        assert now() == expected, server.stats
        new = self.lines()[since.lines :]
        assert len(new) == count, new
        return new

    def one_failure(self, server: Any, since: Mark, counter: str = "handshakes_failed", settle: float = 0.05) -> str:
        """`failures` of one; returns its log line."""
        return self.failures(server, since, 1, counter, settle)[0]

    def assert_healthy(self) -> None:
        assert not self.hub_errors, self.hub_errors
        internal = [r.getMessage() for r in self.caplog.records if r.levelno >= logging.ERROR]
        assert not internal, internal


@pytest.fixture
def watch(caplog: pytest.LogCaptureFixture) -> Iterator[Watch]:
    """A `Watch` on the pausetls loggers and gevent's hub; fails the test if anything reached the hub."""
    caplog.set_level(logging.INFO, "pausetls")
    watcher = Watch(caplog)
    hub = gevent.get_hub()
    hub.handle_error = watcher.record_hub_error  # what gevent calls for an exception nobody caught
    try:
        yield watcher
    finally:
        del hub.handle_error
    watcher.assert_healthy()
