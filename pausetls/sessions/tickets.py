"""Ticket key rings: the keys stateless session tickets (TLS 1.2 RFC 5077, TLS 1.3) are sealed with.

A ring gives OpenSSL's ticket key callback (``SSL_CTX_set_tlsext_ticket_key_evp_cb``,
installed by `Context.set_ticket_keys`) the key to encrypt a new ticket with
(the newest) and the key a presented ticket names (any key not yet retired).
A ticket that names an older key is renewed: the client gets a fresh ticket
under the current key.

* `TicketKeys`: keys from a `pausetls keys` file (or given), reloaded by
  `TicketKeys.reload` (``pausetls serve`` calls it on SIGHUP); decrypt-only keys
  older than ``max_age`` are retired.  Never pauses.
* `StoredTicketKeys` (``stored_tickets.py``): keys that live in memcached or Redis,
  sealed under a master key; the ticket callback pauses while one is fetched.

Each file key becomes a ticket key through HKDF-SHA256 with a label of its
own, so one key file can seal sessions (`SessionSealer`, the raw key) and
encrypt tickets without using the same key material twice.  Key material is
never logged: reprs show key names only.

Failures never fail a handshake: a ring that cannot answer (a store down, a
timeout) means no ticket is issued, or the presented one is ignored (a full
handshake).  Cancellation (``BaseException``) goes through.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .key_file import FileKey, read_key_file
from .stores._common import check_rebind

if TYPE_CHECKING:
    from ..core._driver import Driver

__all__ = ["TicketKey", "TicketKeyRing", "TicketKeys", "TicketKeyStats", "TICKET_KEY_LABEL"]

log = logging.getLogger("pausetls.tickets")

TICKET_KEY_LABEL = b"pausetls session ticket key v1"
NAME_BYTES = 16  # OpenSSL's key_name
_SECRET_BYTES = 32
T = TypeVar("T")


@dataclass(frozen=True)
class TicketKey:
    """A ticket key: the 16-byte name tickets carry in clear, and the HMAC-SHA256 and AES-256 keys."""

    name: bytes
    hmac_key: bytes = field(repr=False)
    aes_key: bytes = field(repr=False)
    created: float | None = None  # seconds since the epoch; None when unknown (never retired by age)

    @classmethod
    def derive(cls, secret: bytes, created: float | None = None, name_prefix: bytes = b"") -> TicketKey:
        """The ticket key of a 32-byte file key; *name_prefix* replaces the start of the derived name."""
        if len(secret) != _SECRET_BYTES:
            raise ValueError("ticket keys derive from 32-byte secrets")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=NAME_BYTES + 64, salt=None, info=TICKET_KEY_LABEL)
        material = hkdf.derive(secret)
        name = (name_prefix + material[:NAME_BYTES])[:NAME_BYTES]
        return cls(name, material[NAME_BYTES : NAME_BYTES + 32], material[NAME_BYTES + 32 :], created)

    def age(self, now: float) -> float | None:
        return None if self.created is None else now - self.created


@dataclass
class TicketKeyStats:
    """Counters of one ring: tickets issued and not issued; presented tickets resumed, renewed
    (under a key that no longer encrypts), unknown (a key the ring does not have, or retired),
    made for another server name (ignored: a full handshake); lookups that failed or timed out."""

    issued: int = 0
    not_issued: int = 0
    resumed: int = 0
    renewed: int = 0
    unknown: int = 0
    other_name: int = 0
    store_errors: int = 0
    timeouts: int = 0
    reloads: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class TicketKeyRing:
    """What `Context.set_ticket_keys` needs.  Subclasses give `_encryption_key` and `_decryption_key`,
    which may block through the bound driver (pausing the handshake) and may raise: a failure
    counts and means no ticket, or a full handshake."""

    timeout: float | None = None  # bound on one lookup, pauses included; None: the ring never waits

    def __init__(self) -> None:
        self.stats = TicketKeyStats()
        self.driver: Driver | None = None

    def bind(self, driver: Driver) -> None:
        """Serve connections of one *driver* (a store-backed ring's sockets wait through it)."""
        if check_rebind(self.driver, driver, self):
            self._bind_store(driver)
            self.driver = driver

    def _bind_store(self, driver: Driver) -> None:
        pass

    def _encryption_key(self) -> TicketKey | None:
        raise NotImplementedError

    def _decryption_key(self, name: bytes) -> tuple[TicketKey, bool] | None:
        raise NotImplementedError

    def for_encryption(self, driver: Driver) -> TicketKey | None:
        """The key to encrypt a new ticket with, or None (no ticket).  Never raises an ``Exception``."""
        key = self._guarded(driver, "encryption key", self._encryption_key)
        if key is None:
            self.stats.not_issued += 1
        else:
            self.stats.issued += 1
        return key

    def for_decryption(self, driver: Driver, name: bytes) -> tuple[TicketKey, bool] | None:
        """(key, renew) for a ticket naming *name*, or None (a full handshake).  Never raises an ``Exception``."""
        found = self._guarded(driver, "decryption key", self._decryption_key, name)
        if found is None:
            self.stats.unknown += 1
        else:  # resumed is counted once OpenSSL decrypted the ticket and its session passed the name check
            self.stats.renewed += found[1]
        return found

    def _guarded(self, driver: Driver, what: str, fn: Callable[..., T | None], *args: Any) -> T | None:
        try:
            if self.timeout is None:
                return fn(*args)
            self.bind(driver)
            return driver.call_with_timeout(fn, self.timeout, *args)  # type: ignore[no-any-return]
        except TimeoutError:
            self.stats.timeouts += 1
            log.debug("ticket %s: timed out after %s s", what, self.timeout)
        except Exception as exc:  # noqa: BLE001 - a ring that cannot answer costs a full handshake, never a failure
            self.stats.store_errors += 1
            log.debug("ticket %s: %s: %s", what, type(exc).__name__, exc)
        return None


class TicketKeys(TicketKeyRing):
    """An in-process ring: the last key encrypts, every key decrypts until retired.

    *max_age* (seconds) retires decrypt-only keys older than that (by their
    creation time; keys without one are kept): their tickets give full
    handshakes.  The current key always encrypts, however old: rotate the file.
    """

    def __init__(self, keys: Sequence[TicketKey], *, max_age: float | None = None, path: str | None = None) -> None:
        super().__init__()
        if not keys:
            raise ValueError("give at least one ticket key")
        self.max_age = max_age
        self.path = path
        self._install(keys)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, max_age: float | None = None) -> TicketKeys:
        """Keys derived from the keys of a ``pausetls keys`` file; the last line encrypts."""
        return cls(_derive_all(read_key_file(path)), max_age=max_age, path=os.fspath(path))

    @classmethod
    def generate(cls) -> TicketKeys:
        """One random key: tickets resume on this process only."""
        return cls([TicketKey.derive(os.urandom(_SECRET_BYTES), time.time())])

    def reload(self) -> None:
        """Read the key file again (after ``pausetls keys rotate``); on an error the keys in use stay."""
        if self.path is None:
            raise ValueError("this ring was not loaded from a file")
        self._install(_derive_all(read_key_file(self.path)))
        self.stats.reloads += 1
        log.info("ticket keys reloaded from %s: %d keys, current %s", self.path, len(self._by_name), self.current)

    def _install(self, keys: Sequence[TicketKey]) -> None:
        by_name = {key.name: key for key in keys}
        if len(by_name) != len(keys):
            raise ValueError("two ticket keys have the same name")
        self._by_name, self.current = by_name, keys[-1]  # one assignment: a handshake sees old or new, never half

    @property
    def names(self) -> list[bytes]:
        return list(self._by_name)

    def bind(self, driver: Driver) -> None:
        """Nothing to bind: an in-process ring never waits, and serves every driver."""

    def _encryption_key(self) -> TicketKey:
        return self.current

    def _decryption_key(self, name: bytes) -> tuple[TicketKey, bool] | None:
        key = self._by_name.get(name)
        if key is None:
            return None
        if key is self.current:
            return key, False
        age = key.age(time.time())
        if self.max_age is not None and age is not None and age > self.max_age:
            return None  # retired
        return key, True

    def __repr__(self) -> str:
        return f"<TicketKeys {len(self._by_name)} keys, current {self.current.name.hex()}>"


def _derive_all(keys: Sequence[FileKey]) -> list[TicketKey]:
    return [TicketKey.derive(key.secret, key.created) for key in keys]
