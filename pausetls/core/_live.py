"""Live-object counters: how many SSL objects, TLS sockets, contexts and jobs exist now.

Tests assert they return to zero; servers expose them as metrics.
"""

from __future__ import annotations

import threading
from collections import Counter

_live: Counter[str] = Counter()
_lock = threading.Lock()  # ThreadedTLSServer's connections count from many threads


def acquire(kind: str) -> None:
    with _lock:
        _live[kind] += 1


def release(kind: str) -> None:
    with _lock:
        _live[kind] -= 1


def live_objects() -> dict[str, int]:
    """A snapshot of the counters: ``ssl``, ``tls_sockets``, ``contexts``, ``jobs`` (OpenSSL calls in
    flight) and ``callbacks`` (user callbacks running now: the handshakes that are, or may be, paused)."""
    return {kind: _live[kind] for kind in ("ssl", "tls_sockets", "contexts", "jobs", "callbacks")}
