"""`StoredTicketKeys`: ticket keys that live in memcached or Redis, shared by a fleet without a key file.

Time is cut into epochs of *rotate_after* seconds; epoch E has one key, filed
in the store under ``NAMESPACE:E``, sealed under the master key (a
`SessionSealer`, with the store key as associated data, so a blob cannot be
moved to another epoch).  Whichever node first needs the key of a new epoch
makes one and files it with an atomic add (memcached ``add``, Redis ``SET NX``):
if another node won the race, its key is read back and used, so the fleet
always agrees on one key per epoch.  That is the rotation schedule.

A ticket's 16-byte key name is the epoch (8 bytes) and 8 bytes derived from
the key, so a node that never saw a key knows which one to fetch on a
decrypt miss, and a name outside the window of live epochs (older than
*max_age*, or from the future beyond one epoch of clock skew) is refused
without asking the store.  Keys are cached in the process once fetched; a
name that matches no cached key of a live epoch fetches that epoch's key again
(at most once a second), so nodes converge when the store lost its keys and a
node made new ones.

Every lookup may pause the handshake (bounded by *timeout*); a store that is
down, slow or answering garbage means no ticket or a full handshake, counted
in `stats`, never a failed handshake.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .sealing import SessionSealer
from .tickets import NAME_BYTES, TicketKey, TicketKeyRing

if TYPE_CHECKING:
    from ..core._driver import Driver

__all__ = ["StoredTicketKeys"]

_EPOCH_BYTES = 8
_SECRET_BYTES = 32
_SKEW_EPOCHS = 1  # a node whose clock runs ahead may already encrypt under the next epoch's key


class StoredTicketKeys(TicketKeyRing):
    """A ticket key ring in a shared *store* (memcached, Redis: it needs ``add``), sealed with *sealer*.

    *rotate_after*: seconds each key encrypts.  *max_age*: seconds after its
    epoch began that a key still decrypts (default three epochs).  *timeout*:
    longest one lookup may pause a handshake.
    """

    def __init__(
        self,
        store: Any,
        sealer: SessionSealer,
        *,
        rotate_after: float = 3600.0,
        max_age: float | None = None,
        timeout: float = 0.5,
        namespace: str = "pausetls-tickets",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        if not callable(getattr(store, "add", None)):
            raise TypeError(f"{store!r} has no add(key, value, ttl): a key ring needs an atomic add")
        if rotate_after <= 0:
            raise ValueError("rotate_after must be positive")
        if max_age is not None and max_age < rotate_after:
            raise ValueError("max_age must be at least rotate_after: the current key must decrypt what it encrypts")
        self.store = store
        self.sealer = sealer
        self.rotate_after = rotate_after
        self.max_age = 3 * rotate_after if max_age is None else max_age
        self.timeout = timeout
        self.namespace = namespace
        self.clock = clock
        self._keys: dict[int, TicketKey] = {}
        self._refetched: dict[int, float] = {}  # epoch -> when its key was last fetched again after a mismatch
        self.refetch_interval = 1.0

    def _bind_store(self, driver: Driver) -> None:
        bind = getattr(self.store, "bind", None)
        if bind is not None:
            bind(driver)

    def _epoch(self, now: float) -> int:
        return int(now // self.rotate_after)

    def _store_key(self, epoch: int) -> str:
        return f"{self.namespace}:{epoch}"

    def _ttl(self) -> int:
        return max(1, int(self.rotate_after + self.max_age) + 1)

    def _encryption_key(self) -> TicketKey:
        epoch = self._epoch(self.clock())
        key = self._keys.get(epoch) or self._fetch(epoch)
        if key is None:
            key = self._create(epoch)
        return key

    def _decryption_key(self, name: bytes) -> tuple[TicketKey, bool] | None:
        now = self.clock()
        current = self._epoch(now)
        epoch = int.from_bytes(name[:_EPOCH_BYTES], "big")
        if epoch > current + _SKEW_EPOCHS or now - epoch * self.rotate_after > self.max_age:
            return None  # retired, or never made: not worth a store round trip
        key = self._keys.get(epoch) or self._fetch(epoch)
        if key is not None and key.name != name and self._may_refetch(epoch, now):
            # the store may hold another key for this epoch than the one cached here (it lost its
            # keys and a node made a new one): take the store's, so the fleet converges on it
            key = self._fetch(epoch)
        if key is None or key.name != name:
            return None
        return key, epoch != current

    def _may_refetch(self, epoch: int, now: float) -> bool:
        """At most one refetch per epoch per *refetch_interval*: made-up names cost no store traffic."""
        if now - self._refetched.get(epoch, -math.inf) < self.refetch_interval:
            return False
        self._refetched = {e: t for e, t in self._refetched.items() if now - t < self.refetch_interval} | {epoch: now}
        return True

    def _fetch(self, epoch: int) -> TicketKey | None:
        """The key of *epoch* from the store (None if no node made it yet); may pause."""
        store_key = self._store_key(epoch)
        blob = self.store.get(store_key)
        if blob is None:
            return None
        return self._remember(epoch, self.sealer.open(blob, store_key.encode()))

    def _create(self, epoch: int) -> TicketKey:
        """Make the key of *epoch*, unless another node just did: then use theirs."""
        store_key = self._store_key(epoch)
        secret = os.urandom(_SECRET_BYTES)
        if self.store.add(store_key, self.sealer.seal(secret, store_key.encode()), self._ttl()):
            return self._remember(epoch, secret)
        key = self._fetch(epoch)
        if key is None:
            raise LookupError(f"the ticket key of epoch {epoch} was neither added nor found")
        return key

    def _remember(self, epoch: int, secret: bytes) -> TicketKey:
        prefix = epoch.to_bytes(_EPOCH_BYTES, "big")
        key = TicketKey.derive(secret, epoch * self.rotate_after, name_prefix=prefix)
        assert len(key.name) == NAME_BYTES
        oldest = self._epoch(self.clock() - self.max_age) - 1
        self._keys = {e: k for e, k in self._keys.items() if e >= oldest} | {epoch: key}
        return key

    def __repr__(self) -> str:
        return f"<StoredTicketKeys {self.store!r} every {self.rotate_after:g} s>"
