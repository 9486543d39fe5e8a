"""Child processes of the harness and the JSON lines they exchange with it."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pausetls

BENCH_ROOT = Path(__file__).resolve().parent.parent  # the directory holding bench/


class ChildError(RuntimeError):
    """A child process died or did not answer in time; the message carries its stderr."""


def python_module_argv(module: str, *args: str) -> list[str]:
    """``python -m module args`` that imports this process's pausetls (installed or built in place),
    not a source tree that happens to be the current directory, and finds `bench`."""
    pausetls_root = str(Path(pausetls.__file__).resolve().parent.parent)
    code = (
        f"import runpy, sys; sys.path[:0] = [{pausetls_root!r}]; sys.path.append({str(BENCH_ROOT)!r}); "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", code, *args]


class Child:
    """A subprocess spoken to in lines: commands on its stdin, replies on its stdout, stderr to a file."""

    def __init__(self, argv: list[str], name: str, log: IO[bytes]) -> None:
        self.name = name
        self._log = log
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, line: str | dict[str, Any]) -> None:
        data = line if isinstance(line, str) else json.dumps(line)
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data.encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise ChildError(f"{self.name} exited: {self.stderr_tail()}") from None

    def receive_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ChildError(f"{self.name} did not answer within {timeout:.0f} s: {self.stderr_tail()}")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise ChildError(f"{self.name} exited: {self.stderr_tail()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def receive(self, timeout: float) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(self.receive_line(timeout))
        return reply

    def stderr_tail(self, size: int = 2000) -> str:
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        end = self._log.tell()
        self._log.seek(max(0, end - size))
        return self._log.read().decode("utf-8", "replace").strip() or "(no output)"

    def stop(self, grace: float = 5.0) -> None:
        if self.process.poll() is None:
            try:
                self.send("exit")
                self.process.wait(grace)
            except (ChildError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
