"""Live-object counters: how many SSL objects, TLS sockets, contexts and jobs exist now.

Tests assert they return to zero; servers expose them as metrics.

No lock: each kind is two `itertools.count` (made, gone), and ``next()`` on one is a single C call,
atomic under the GIL, so ThreadedTLSServer's threads count safely and the gevent path pays no lock
round trip per connection and per callback.  Reading (rare) takes the difference.
"""

from __future__ import annotations

from itertools import count

_KINDS = ("ssl", "tls_sockets", "contexts", "jobs", "callbacks")
_made = {kind: count() for kind in _KINDS}
_gone = {kind: count() for kind in _KINDS}


def acquire(kind: str) -> None:
    next(_made[kind])


def release(kind: str) -> None:
    next(_gone[kind])


def _value(counter: count[int]) -> int:
    return int(repr(counter)[len("count(") : -1])  # the next value it will give: how many it gave


def live_objects() -> dict[str, int]:
    """A snapshot of the counters: ``ssl``, ``tls_sockets``, ``contexts``, ``jobs`` (OpenSSL calls in
    flight that have a job: under gevent and asyncio, those a callback has run in) and
    ``callbacks`` (user callbacks running now: the handshakes that are, or may be, paused)."""
    return {kind: _value(_made[kind]) - _value(_gone[kind]) for kind in _KINDS}
