"""``python -m pausetls serve`` as a subprocess, for tests of the command line and of many processes."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import pausetls
from pausetls.sealing import SessionSealer

from gates import GENEROUS
from pki import Issued


def pausetls_env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m pausetls`` child: it must import the pausetls these tests import
    (run from the checkout, its source tree has no compiled binding when pausetls is installed)."""
    return dict(os.environ, PYTHONPATH=str(Path(pausetls.__file__).parent.parent), **extra)


@contextmanager
def killed_at_end() -> Iterator[list[Served]]:
    """A list for the ``pausetls serve`` processes a test starts: each is killed as the block ends, whatever happens."""
    started: list[Served] = []
    try:
        yield started
    finally:
        for served in started:
            served.kill()


def start_tracked(started: list[Served], workdir: Path, *args: str | os.PathLike[str]) -> Served:
    """``pausetls serve ARGS`` in a directory of its own under *workdir*, added to *started* (to kill at the end)."""
    served = Served([os.fspath(arg) for arg in args], workdir / f"serve{len(started)}")
    started.append(served)
    return served


def run_pausetls(
    cwd: Path, *args: str | os.PathLike[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m pausetls ARGS`` run in ``cwd``: ``-m`` puts the cwd first on ``sys.path``, and from the
    checkout its ``pausetls/`` (no compiled binding after ``pip install .``) shadows the installed one."""
    return subprocess.run(
        [sys.executable, "-m", "pausetls", *map(os.fspath, args)],
        cwd=cwd,
        env=env or pausetls_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


SERVING = re.compile(
    r"^pausetls: serving https://(?P<host>.+):(?P<port>\d+)/ \(OpenSSL (?P<openssl>\d+\.\d+\.\d+\S*)\)$"
)
SELF_SIGNED = re.compile(r"self-signed certificate .* \(SHA-256 fingerprint (?P<fingerprint>[0-9A-F:]{95})\)$")
COUNTERS = re.compile(r"^pausetls: stopped; counters: (?P<json>\{.*\})$")
ROW = re.compile(r"^(?P<label>[^:]+):\s+(?P<value>.*)$", re.M)


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

    def wait_for(self, pattern: re.Pattern[str], timeout: float = GENEROUS) -> re.Match[str]:
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

    def wait_for_log(self, pattern: re.Pattern[str], count: int = 1, timeout: float = GENEROUS) -> list[re.Match[str]]:
        """The stderr lines matching *pattern*, once there are at least *count* (polled, within *timeout*)."""
        deadline = time.monotonic() + timeout
        while len(matches := self.log_matches(pattern)) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"fewer than {count} log lines matching {pattern.pattern!r} in {timeout}s: {self.stderr}")
            time.sleep(0.02)
        return matches

    def stop(self, signum: int = signal.SIGINT, timeout: float = GENEROUS) -> int:
        """Send *signum*; the exit status (fails the test if it takes longer than *timeout*)."""
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout}s after {signal.Signals(signum).name}")

    def counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = json.loads(self.wait_for(COUNTERS)["json"])
        return counters

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def fetch_page(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> tuple[dict[str, str], Any]:
    """GET the info page of ``pausetls serve`` with a blocking stdlib client (the servers are other processes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"GET /?format=text HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
            body = response.split(b"\r\n\r\n", 1)[1].decode()
            return {m["label"]: m["value"] for m in ROW.finditer(body)}, tls.session


def serve(tmp_path: Path, name: str, server_cert: Issued, store_url: str, key_file: Path, *extra: str) -> Served:
    args = ["--cert", str(server_cert.chain_path), "--key", str(server_cert.key_path)]
    args += ["--session-store", store_url, "--session-key-file", str(key_file), *extra]
    return Served(args, tmp_path / name)


def resumed_within(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession, seconds: float = GENEROUS
) -> dict[str, str]:
    """The first page fetched with *session* that resumed (the session is stored asynchronously)."""
    deadline = time.monotonic() + seconds
    while True:
        page, _ = fetch_page(port, ctx, session)
        if page["Session resumed"] == "yes" or time.monotonic() > deadline:
            return page
        time.sleep(0.05)


def session_key_file(directory: Path) -> Path:
    """A ``--session-key-file`` with one fresh key."""
    path = directory / "session-keys"
    path.write_text(SessionSealer.new_key_line(1) + "\n")
    return path
