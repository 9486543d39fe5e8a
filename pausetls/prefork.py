"""Pre-fork workers: N processes serving one listening socket.

The parent binds the socket and makes everything the workers must share
(certificates, session sealing keys) before forking, so sessions a worker
seals can be opened by any other worker through a shared store.  The parent
forwards SIGINT/SIGTERM to the workers and waits for them.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import gevent.os

__all__ = ["run_workers"]


def run_workers(count: int, serve: Callable[[int], int]) -> int:
    """Fork *count* workers running ``serve(worker_number)``; return the worst exit code."""
    children: list[int] = []
    for number in range(count):
        pid = gevent.os.fork()  # re-initialises gevent's hub in the child
        if pid == 0:
            code = 1
            try:
                code = serve(number)
            finally:
                sys.stdout.flush()
                os._exit(code)
        children.append(pid)
    return _wait_for(children)


def _wait_for(children: list[int]) -> int:
    def forward(signum: int, frame: Any) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    worst = 0
    try:
        for pid in children:
            while True:
                try:
                    _, status = os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
            worst = max(worst, os.waitstatus_to_exitcode(status) if status else 0)
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)
    return worst
