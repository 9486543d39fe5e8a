"""What the harness shows while it runs: which cell, how far, and why a cell is skipped."""

from __future__ import annotations

import sys
import time
from typing import TextIO

CLEAR_LINE = "\r\x1b[K"
QUIET_INTERVAL = 10.0  # seconds between progress lines when the output is not a terminal


class Progress:
    """One line per cell, rewritten in place on a terminal; plain lines in a log file."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._prefix = ""
        self._last_line = 0.0

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60:2d}:{seconds % 60:02d}"

    def cell(self, index: int, title: str) -> None:
        self._prefix = f"[{index}/{self.total} {self._elapsed()}] {title}: "
        self._last_line = 0.0
        self.update("starting")

    def update(self, text: str) -> None:
        if self.tty:
            self.stream.write(f"{CLEAR_LINE}{self._prefix}{text}")
            self.stream.flush()
        elif time.monotonic() - self._last_line >= QUIET_INTERVAL:
            self._last_line = time.monotonic()
            self.stream.write(f"{self._prefix}{text}\n")
            self.stream.flush()

    def done(self, text: str) -> None:
        self.stream.write(f"{self._clear()}{self._prefix}{text}\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own: a skipped mode or cell, with its reason and fix."""
        self.stream.write(f"{self._clear()}{text}\n")
        self.stream.flush()

    def _clear(self) -> str:
        return CLEAR_LINE if self.tty else ""
