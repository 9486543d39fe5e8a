"""A pre-forked worker leaves when its parent (the supervisor) dies.

On Linux the kernel sends the worker SIGTERM when the parent dies
(``prctl(PR_SET_PDEATHSIG)``), so it stops gracefully like any stopped
worker.  Elsewhere a greenlet polls ``os.getppid()`` and sends the same
SIGTERM: an orphan is re-parented, so its parent pid changes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import gevent

__all__ = ["leave_when_parent_dies", "PARENT_POLL_INTERVAL"]

PARENT_POLL_INTERVAL = 1.0  # seconds between parent checks where prctl is missing
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def leave_when_parent_dies(parent_pid: int, *, use_prctl: bool = True, interval: float = PARENT_POLL_INTERVAL) -> None:
    """Arrange for SIGTERM when *parent_pid* dies; exit now if it already has.

    Call it in the child right after fork, before anything else runs.
    """
    if not (use_prctl and _set_parent_death_signal(signal.SIGTERM)):
        gevent.spawn(_poll_parent, parent_pid, interval)
    # The parent may have died between fork and prctl: then no signal will come.
    if os.getppid() != parent_pid:
        os._exit(0)


def _set_parent_death_signal(signum: int) -> bool:
    """True if the kernel will send *signum* when the parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _poll_parent(parent_pid: int, interval: float) -> None:
    while os.getppid() == parent_pid:
        gevent.sleep(interval)
    os.kill(os.getpid(), signal.SIGTERM)
