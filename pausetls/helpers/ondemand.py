"""`OnDemandCertificates`: a server loads the certificate for an SNI name the first time it is asked for.

    certs = pausetls.OnDemandCertificates("/etc/tls/sites")   # or a loader function
    certs.install(ctx)                                         # the SNI callback

*loader* is either

* a directory holding ``<name>.pem`` (the chain: leaf first, then
  intermediates) and ``<name>.key`` (its private key, unencrypted PEM).  A
  name with no files of its own falls back to ``_wildcard.<parent>.pem`` /
  ``.key`` (``a.example.com`` -> ``_wildcard.example.com``; one level, and
  only under a parent of two labels or more); or
* ``loader(name) -> (chain_pem, key_pem) | None``, which may block on its
  driver's loop (a vault, a database, an ACME client).  None means "no such name".

Names are the SNI names clients send, lowercased and checked against
``[a-z0-9-]`` labels (no ``/``, no ``..``, no ``_``) before any loader sees
them, so a directory loader never leaves its directory and a client cannot
ask for the ``_wildcard.`` files directly.

Loads run apart (``driver.defer``: a greenlet under gevent, the default; a
worker thread under threads), bounded by *load_timeout*; concurrent first
requests for one name wait on the same load (a ``concurrent.futures.Future``),
and a handshake that gives up waiting does not cancel it.  Results are kept
in an LRU of parsed certificates and keys (*max_entries*, optional *ttl*);
unknown names are remembered for *miss_ttl* seconds in a separate LRU, so
random names neither reach the loader on every handshake nor evict real
certificates (``miss_ttl=0``: not remembered).  A loader that raises fails
the handshakes waiting on it (internal_error) and is not cached.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..core.context import Context
from ..core.errors import Error, TimeoutError
from ..core.tls_socket import TLSSocket
from ..drivers.gevent import gevent_driver
from ._expiring_lru import ExpiringLRU

if TYPE_CHECKING:
    from ..core._driver import Driver

__all__ = [
    "OnDemandCertificates",
    "OnDemandStats",
    "CertifiedKey",
    "DirectoryLoader",
    "Loader",
    "normalize_server_name",
]

log = logging.getLogger("pausetls.ondemand")

Loader = Callable[[str], "tuple[bytes, bytes] | None"]
"""``loader(name) -> (chain_pem, key_pem) | None``; may block on the driver's loop."""

_LABEL = r"[a-z0-9-]{1,63}"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_WILDCARD_PREFIX = "_wildcard."


def normalize_server_name(name: str | bytes | None) -> str | None:
    """*name* lowercased without a trailing dot, or None if it is no DNS host name."""
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not name:
        return None
    name = name.lower().removesuffix(".")
    return name if len(name) <= 253 and _NAME.match(name) else None


@dataclass(frozen=True)
class CertifiedKey:
    """A parsed certificate chain and its key, kept as DER so applying one is a plain ``d2i``."""

    name: str
    certificate: x509.Certificate
    chain: tuple[bytes, ...] = field(repr=False)  # DER, leaf first
    key: bytes = field(repr=False)  # DER PKCS#8

    @classmethod
    def from_pem(cls, name: str, chain_pem: bytes, key_pem: bytes) -> CertifiedKey:
        certs = x509.load_pem_x509_certificates(chain_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(*spki) != certs[0].public_key().public_bytes(*spki):
            raise Error(f"the private key loaded for {name!r} does not match its certificate")
        return cls(
            name,
            certs[0],
            tuple(c.public_bytes(serialization.Encoding.DER) for c in certs),
            key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )

    def apply(self, conn: TLSSocket) -> None:
        """Make this the connection's certificate, chain and key (replacing what it had)."""
        conn.clear_certificates()  # drop the context's defaults, and our own on a second ClientHello
        conn.use_certificate(self.chain[0])
        for der in self.chain[1:]:
            conn.add_chain_certificate(der)
        conn.use_privatekey(self.key)


class DirectoryLoader:
    """``<directory>/<name>.pem`` + ``.key``, else ``_wildcard.<parent>.pem`` + ``.key``; None if neither."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"{directory!s} is not a directory")

    def __call__(self, name: str) -> tuple[bytes, bytes] | None:
        if normalize_server_name(name) != name:  # callers normalise; this guards the paths anyway
            return None
        stems = [name]
        parent = name.partition(".")[2]
        if "." in parent:
            stems.append(_WILDCARD_PREFIX + parent)
        for stem in stems:
            chain = self.directory / f"{stem}.pem"
            if chain.is_file():
                return chain.read_bytes(), (self.directory / f"{stem}.key").read_bytes()
        return None

    def __repr__(self) -> str:
        return f"DirectoryLoader({str(self.directory)!r})"


@dataclass
class OnDemandStats:
    """``loads``: loader calls; ``hits``/``waits``: served from the cache / by a load already running."""

    hits: int = 0
    loads: int = 0
    waits: int = 0
    unknown: int = 0
    failures: int = 0


class OnDemandCertificates:
    """Certificates per SNI name, loaded on first use and cached (see the module docstring).

    ``default=True`` lets a name the loader does not know (or no SNI at all)
    go on with the context's own certificate; otherwise the handshake fails
    with unrecognized_name.
    """

    def __init__(
        self,
        loader: str | os.PathLike[str] | Loader,
        *,
        default: bool = False,
        max_entries: int = 1000,
        ttl: float | None = None,
        miss_ttl: float = 60.0,
        load_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        driver: Driver = gevent_driver,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.loader: Loader = loader if callable(loader) else DirectoryLoader(loader)
        self.default = default
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self.load_timeout = load_timeout
        self.driver = driver  # runs loads, bounds them, and waits for them
        self.stats = OnDemandStats()
        self._found: ExpiringLRU[CertifiedKey] = ExpiringLRU(max_entries, clock)
        self._missing: ExpiringLRU[None] = ExpiringLRU(max_entries, clock)
        self._loading: dict[str, Future[CertifiedKey | None]] = {}

    def install(self, context: Context) -> None:
        """Use this as *context*'s SNI callback."""
        context.set_tlsext_servername_callback(self.servername_callback)

    def servername_callback(self, conn: TLSSocket) -> bool:
        """For `Context.set_tlsext_servername_callback`: False (unrecognized_name) for unknown names."""
        found = self.get(conn.get_servername())
        if found is None:
            return self.default
        found.apply(conn)
        return True

    def certificate_callback(self, conn: TLSSocket) -> bool:
        """For `Context.set_certificate_callback`; OpenSSL answers a refusal there with internal_error."""
        return self.servername_callback(conn)

    def get(self, server_name: str | bytes | None) -> CertifiedKey | None:
        """The certificate for *server_name*, loading it if needed (waits through the driver); None if unknown."""
        name = normalize_server_name(server_name)
        if name is None:
            self.stats.unknown += 1
            return None
        cached, found = self._found.get(name)
        if cached:
            self.stats.hits += 1
            return found
        if self._missing.get(name)[0]:
            self.stats.unknown += 1
            return None
        pending = self._loading.get(name)
        if pending is None:
            pending = self._loading[name] = Future()
            self.driver.defer(self._load, name, pending)
        else:
            self.stats.waits += 1
        result: CertifiedKey | None = self.driver.wait(pending, None)
        if result is None:
            self.stats.unknown += 1
        return result

    def forget(self, server_name: str | bytes | None = None) -> None:
        """Drop one name (e.g. after renewing its certificate) or, with no argument, everything."""
        if server_name is None:
            self._found.clear()
            self._missing.clear()
            self._loading.clear()  # loads under way still answer their waiters, but cache nothing
            return
        name = normalize_server_name(server_name)
        if name is not None:
            self._found.pop(name)
            self._missing.pop(name)
            self._loading.pop(name, None)

    def __len__(self) -> int:
        """Certificates cached."""
        return len(self._found)

    def _load(self, name: str, pending: Future[CertifiedKey | None]) -> None:
        self.stats.loads += 1
        try:
            try:
                loaded = self.driver.call_with_timeout(self.loader, self.load_timeout, name)
            except TimeoutError as exc:
                raise TimeoutError(f"loading the certificate for {name!r} timed out") from exc
            found = None if loaded is None else CertifiedKey.from_pem(name, *loaded)
        except BaseException as exc:
            self.stats.failures += 1
            log.warning("cannot load the certificate for %r: %s: %s", name, type(exc).__name__, exc)
            pending.set_exception(exc if isinstance(exc, Exception) else Error(f"loading {name!r} was cancelled"))
            if not isinstance(exc, Exception):
                raise
        else:
            if self._loading.get(name) is pending:  # else forgotten while loading: answer, cache nothing
                self._remember(name, found)
            pending.set_result(found)
        finally:
            if self._loading.get(name) is pending:
                del self._loading[name]

    def _remember(self, name: str, found: CertifiedKey | None) -> None:
        if found is not None:
            self._found.put(name, found, self.ttl)
        elif self.miss_ttl > 0:
            self._missing.put(name, None, self.miss_ttl)

    def __repr__(self) -> str:
        return f"<OnDemandCertificates {self.loader!r} {len(self._found)} cached>"
