"""`ClientSessionCache`: a client context's sessions, offered again to the server they came from.

Keyed by (host, port, server_hostname): a session is offered only to the
address *and* the name it was made for, so a session from one virtual host is
never shown to another (OpenSSL's own client cache has no such key: it has no
client cache at all).

How sessions arrive (``SSL_CTX_sess_set_new_cb`` with ``SSL_SESS_CACHE_CLIENT``):

* TLS 1.2: at the end of a full handshake, one session (an id, a ticket or
  both).  It stays offerable until a newer one replaces it or it expires: RFC
  5077 lets a client offer a ticket again.
* TLS 1.3: NewSessionTicket messages arrive *after* the handshake, inside a
  later read, each a session of its own.  A ticket is offered once
  (RFC 8446 C.4: reusing one lets a network observer link the connections), so
  `take` removes it; the server sends new ones on the resumed connection.

Bounded: at most *max_entries* keys, least recently used dropped first, and at
most *tickets_per_key* TLS 1.3 tickets per key (the newest kept).  Expired and
no-longer-resumable sessions are dropped when met.  Never pauses: it runs inside
OpenSSL's callback, under a lock no other call holds for long.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass

from .constants import TLS1_3_VERSION
from .session import Session

__all__ = ["ClientSessionCache", "ClientSessionCacheStats", "SessionKey"]

SessionKey = tuple[str, int, str | None]
"""(host, port, server_hostname): where a session was made, and so where it may be offered."""


@dataclass
class ClientSessionCacheStats:
    """``stored``: sessions kept; ``offered``: handshakes that offered one; ``reused``: of those, resumed;
    ``dropped``: expired or not resumable when met; ``evicted``: pushed out by the bounds."""

    stored: int = 0
    offered: int = 0
    reused: int = 0
    dropped: int = 0
    evicted: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ClientSessionCache:
    """Sessions by (host, port, server_hostname); see the module docstring."""

    def __init__(self, max_entries: int = 1024, tickets_per_key: int = 4) -> None:
        if max_entries < 1 or tickets_per_key < 1:
            raise ValueError("max_entries and tickets_per_key must be at least 1")
        self.max_entries = max_entries
        self.tickets_per_key = tickets_per_key
        self.stats = ClientSessionCacheStats()
        self._lock = threading.Lock()
        self._entries: OrderedDict[SessionKey, deque[Session]] = OrderedDict()

    def add(self, key: SessionKey, session: Session) -> None:
        """Keep *session*, just made with the server at *key*."""
        with self._lock:
            tls13 = session.protocol_version >= TLS1_3_VERSION
            sessions = self._entries.pop(key, None)
            if not tls13 or sessions is None or sessions.maxlen != self.tickets_per_key:
                # TLS 1.2: the newest session replaces the last one (and a TLS 1.3 ticket a TLS 1.2 session)
                sessions = deque(maxlen=self.tickets_per_key if tls13 else 1)
            elif len(sessions) == sessions.maxlen:
                self.stats.evicted += 1  # the oldest ticket makes room
            sessions.append(session)
            self._entries[key] = sessions  # most recently used last
            self.stats.stored += 1
            while len(self._entries) > self.max_entries:
                _, dropped = self._entries.popitem(last=False)
                self.stats.evicted += len(dropped)

    def take(self, key: SessionKey) -> Session | None:
        """A session to offer at *key*, or None.  A TLS 1.3 ticket leaves the cache (single use)."""
        with self._lock:
            sessions = self._entries.get(key)
            while sessions:
                session = sessions[-1]  # the newest lives longest
                if session.expired() or not session.is_resumable():
                    sessions.pop()
                    self.stats.dropped += 1
                    continue
                if session.protocol_version >= TLS1_3_VERSION:
                    sessions.pop()
                self._entries.move_to_end(key)
                self.stats.offered += 1
                return session
            self._entries.pop(key, None)
            return None

    def record_outcome(self, reused: bool) -> None:
        """After a handshake that offered a session: did the server take it?"""
        with self._lock:
            self.stats.reused += reused

    def sessions(self, key: SessionKey) -> list[Session]:
        """What is held for *key*, oldest first (a copy)."""
        with self._lock:
            return list(self._entries.get(key, ()))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(sessions) for sessions in self._entries.values())
