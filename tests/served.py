"""``python -m pausetls serve`` as a subprocess, for tests of the command line and of many processes."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import pausetls


def pausetls_env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m pausetls`` child: it must import the pausetls these tests import
    (run from the checkout, its source tree has no compiled binding when pausetls is installed)."""
    return dict(os.environ, PYTHONPATH=str(Path(pausetls.__file__).parent.parent), **extra)


SERVING = re.compile(
    r"^pausetls: serving https://(?P<host>.+):(?P<port>\d+)/ \(OpenSSL (?P<openssl>\d+\.\d+\.\d+\S*)\)$"
)
SELF_SIGNED = re.compile(r"self-signed certificate .* \(SHA-256 fingerprint (?P<fingerprint>[0-9A-F:]{95})\)$")
COUNTERS = re.compile(r"^pausetls: stopped; counters: (?P<json>\{.*\})$")


class Served:
    """A ``python -m pausetls serve`` subprocess; its stdout lines arrive through a reader thread."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        self.tmpdir = workdir / "tmp"
        self.tmpdir.mkdir(parents=True)
        self.stderr_path = workdir / "stderr.txt"
        env = pausetls_env(TMPDIR=str(self.tmpdir))  # where the throwaway certificate goes
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pausetls", "serve", "--port", "0", *args],
                cwd=workdir,  # not the checkout: its pausetls/ has no compiled binding when installed
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.wait_for(SERVING)["port"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 20.0) -> re.Match[str]:
        """The first line (seen before or arriving within *timeout*) that matches *pattern*."""
        for seen in self.lines:
            if match := pattern.search(seen):
                return match
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern.pattern!r} in {timeout}s; got {self.lines}")
            if line is None:
                pytest.fail(
                    f"exited ({self.proc.poll()}) before printing {pattern.pattern!r}: {self.lines} {self.stderr}"
                )
            self.lines.append(line)
            if match := pattern.search(line):
                return match

    def log_matches(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        """Every stderr line (the log, from the server and its workers) matching *pattern*, so far."""
        return [match for line in self.stderr.splitlines() if (match := pattern.search(line))]

    def wait_for_log(self, pattern: re.Pattern[str], count: int = 1, timeout: float = 20.0) -> list[re.Match[str]]:
        """The stderr lines matching *pattern*, once there are at least *count* (polled, within *timeout*)."""
        deadline = time.monotonic() + timeout
        while len(matches := self.log_matches(pattern)) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"fewer than {count} log lines matching {pattern.pattern!r} in {timeout}s: {self.stderr}")
            time.sleep(0.02)
        return matches

    def stop(self, signum: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """Send *signum*; the exit status (fails the test if it takes longer than *timeout*)."""
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout}s after {signal.Signals(signum).name}")

    def counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = json.loads(self.wait_for(COUNTERS, timeout=5)["json"])
        return counters

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
