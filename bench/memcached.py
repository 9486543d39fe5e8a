"""A real memcached for the resumption scenario's store cells: one process on a free loopback port.

Its CPU is not the server's (`ServerUnderTest.pids` leaves it out): the figure
compared is what a pausetls process spends per resumed handshake when its
sessions live in a shared store, the store's own round trip included.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.children import ChildError

MEMCACHED_MISSING = "memcached was not found on PATH: the store cells are skipped. Fix: apt-get install memcached"
START_TIMEOUT = 10.0


def find_memcached() -> str | None:
    return shutil.which("memcached")


class Memcached:
    """``memcached -l 127.0.0.1 -p PORT``, one thread, started now and stopped by `stop`."""

    def __init__(self, binary: str, log_dir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        argv = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-t", "1", "-m", "64", "-c", "4096"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root without it
        self._log = (log_dir / f"memcached-{self.port}.log").open("w+b")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._accepts():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ChildError(f"memcached did not start: {' '.join(argv)}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"memcached://127.0.0.1:{self.port}"

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()
