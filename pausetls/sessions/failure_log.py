"""`FailureLog`: a failing session store is reported at most once per interval, with a count.

A store that is down fails every handshake's lookup and write; one log line per
connection would bury everything else (and cost more than the failure).  The
first failure is logged at once; later ones are counted, and the next line
(no sooner than *interval* seconds after the previous) says how many there were.
Shared by every store and every driver: the session cache, which all of them go
through, is what reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["FailureLog", "REPORT_INTERVAL"]

REPORT_INTERVAL = 10.0  # seconds between two lines about the same failing store


class FailureLog:
    """Counts failures; logs the first, then at most one line per *interval* with the count since the last."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        interval: float = REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.interval = interval
        self.clock = clock
        self.unreported = 0
        self._last_report: float | None = None
        self._lock = threading.Lock()  # a threaded server's connections fail from many threads

    def failed(self, detail: str) -> None:
        """One more failure; *detail* (the error) appears in the line if this one is logged."""
        with self._lock:
            self.unreported += 1
            now = self.clock()
            if self._last_report is not None and now - self._last_report < self.interval:
                return
            count, self.unreported, self._last_report = self.unreported, 0, now
        since = "" if count == 1 else f" since the last report {self.interval:g} s or more ago"
        self.logger.warning(
            "%s failing: %s (%d failure%s%s; a failed lookup is a full handshake, a failed write loses a session)",
            self.what,
            detail,
            count,
            "" if count == 1 else "s",
            since,
        )
