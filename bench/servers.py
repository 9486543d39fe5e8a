"""The server under test, whatever its mode: a `bench.server` child or nginx, behind one interface."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from bench.children import Child, ChildError, python_module_argv
from bench.memcached import MEMCACHED_MISSING, Memcached, find_memcached
from bench.nginx import NginxServer
from bench.pki import BenchPKI
from bench.plan import Cell
from bench.procstat import children

START_TIMEOUT = 30.0
STATS_TIMEOUT = 30.0


class ServerUnderTest(Protocol):
    port: int

    def pids(self) -> list[int]:
        """The processes whose CPU time and memory are the server's."""

    def stats(self) -> dict[str, int]:
        """The server's own counters: ``handshakes_completed``, ``handshaking``, ``greenlets``, ..."""

    def stop(self) -> None: ...


class PythonServer:
    """A `bench.server` child process serving one cell."""

    def __init__(self, cell: Cell, pki: BenchPKI, log_dir: Path) -> None:
        self.memcached = None
        if cell.callback == "memcached":
            binary = find_memcached()
            if binary is None:
                raise ChildError(MEMCACHED_MISSING)
            self.memcached = Memcached(binary, log_dir)
        config = {
            "cell": cell.as_dict(),
            "pki": {k: str(v) for k, v in asdict(pki).items()},
            "store_url": self.memcached.url if self.memcached else "",
        }
        log = tempfile.TemporaryFile(dir=log_dir)
        self.child = Child(python_module_argv("bench.server", json.dumps(config)), f"{cell.mode} server", log)
        try:
            ready = self.child.receive_line(START_TIMEOUT)
            if not ready.startswith("READY "):
                raise ChildError(f"{self.child.name} said {ready!r}: {self.child.stderr_tail()}")
        except ChildError:
            self.stop()
            raise
        self.port = int(ready.split()[1])

    def pids(self) -> list[int]:
        return [self.child.pid, *children(self.child.pid)]  # a pre-fork mode's workers too

    def stats(self) -> dict[str, int]:
        self.child.send("stats")
        return self.child.receive(STATS_TIMEOUT)

    def stop(self) -> None:
        self.child.stop()
        if self.memcached is not None:
            self.memcached.stop()


def start_server(cell: Cell, pki: BenchPKI, work_dir: Path, nginx: str | None, nofile: int) -> ServerUnderTest:
    """A fresh server for *cell* (fresh, so its memory figures are this cell's alone)."""
    if cell.mode == "nginx":
        if nginx is None:
            raise ChildError("nginx is not installed")
        return NginxServer(nginx, cell, pki, Path(tempfile.mkdtemp(prefix="nginx-", dir=work_dir)), nofile)
    return PythonServer(cell, pki, work_dir)
