"""`AIAFetcher`: a client verify callback that fetches the intermediates a server left out.

Many servers send only their own certificate.  Browsers cope by fetching the
missing issuer from the URL in the certificate's Authority Information
Access extension (caIssuers); OpenSSL does not, and fails with "unable to
get local issuer certificate".  Because pausetls lets a verify callback
pause, the callback itself can do that fetch mid-handshake::

    fetcher = pausetls.AIAFetcher(cafile="roots.pem")
    ctx = pausetls.client_context("roots.pem")
    ctx.set_verify(pausetls.VERIFY_PEER, fetcher.verify)      # or fetcher.wrap(my_callback)
    tls = pausetls.connect(("example.org", 443), ctx, server_hostname="example.org")

It fails closed: a missing issuer is only forgiven after the fetcher has
verified the whole chain itself (``cryptography.x509.verification``: the
peer's chain plus what it fetched, against its own trust store, including
the host name); any fetch or verification failure keeps OpenSSL's "no".
Client side only (it checks ``conn.server_hostname``).  Its sockets and waits
come from its *driver*: gevent's by default, ``driver=thread_driver`` for threads.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID
from OpenSSL import crypto

from ..core.errors import Error, TimeoutError
from ..drivers.gevent import gevent_driver
from ._expiring_lru import ExpiringLRU
from ._http_get import FetchError, http_get

if TYPE_CHECKING:
    from ..core._driver import Driver
    from ..core.context import VerifyCallback
    from ..core.tls_socket import TLSSocket

__all__ = ["AIAFetcher", "AIAStats", "FetchError", "load_roots", "parse_certificates"]

log = logging.getLogger("pausetls.aia")

X509_V_OK = 0
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT = 2
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
# what OpenSSL reports when a chain stops short of the trust store: the first error, then its follow-on
_MISSING_ISSUER = frozenset({X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY})
_AFTER_MISSING_ISSUER = _MISSING_ISSUER | {X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE}

Certificates = tuple[x509.Certificate, ...]


@dataclass
class AIAStats:
    """Counters: network fetches, cache hits, chains completed and chains refused."""

    fetches: int = 0
    cache_hits: int = 0
    completed: int = 0
    refused: int = 0


@dataclass(frozen=True)
class _Outcome:
    """One URL's fetch result: the certificates, or why there are none."""

    certificates: Certificates | None
    reason: str


class AIAFetcher:
    """Completes verification of incomplete server chains by fetching AIA caIssuers URLs.

    *cafile*/*capath* are the trust anchors it verifies against (default:
    `ssl.get_default_verify_paths()`); give it the same ones as the
    Context.  *timeout* bounds all fetches for one verification, *max_bytes*
    one answer's body; *cache_size* URLs are kept (failures only for
    `negative_ttl` seconds); *allow_hosts*, if given, are the only hosts it
    fetches from (otherwise a server can make the client GET any http:// URL,
    as browsers allow).  *driver* makes its sockets and bounds its waits.
    """

    max_chain_fetches = 4  # AIA hops followed upwards from the certificate missing its issuer
    positive_ttl = 24 * 3600.0
    negative_ttl = 30.0

    def __init__(
        self,
        *,
        cafile: str | os.PathLike[str] | None = None,
        capath: str | os.PathLike[str] | None = None,
        timeout: float = 3.0,
        max_bytes: int = 65536,
        cache_size: int = 256,
        allow_hosts: Iterable[str] | None = None,
        driver: Driver = gevent_driver,
    ) -> None:
        if not timeout > 0 or max_bytes <= 0 or cache_size < 0:
            raise ValueError("timeout and max_bytes must be positive, cache_size not negative")
        roots = load_roots(cafile, capath)
        self._store = verification.Store(roots)
        self._root_names = {root.subject for root in roots}
        self.driver = driver  # sockets, time limits and waits for another fetch of the same URL
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.allow_hosts = None if allow_hosts is None else frozenset(_normal_host(h) for h in allow_hosts)
        self.stats = AIAStats()
        self._cache: ExpiringLRU[_Outcome] = ExpiringLRU(cache_size)
        self._in_flight: dict[str, Future[_Outcome]] = {}
        # connection -> DER of the leaf it verified, so OpenSSL's follow-on errors for that chain pass
        self._verified: WeakKeyDictionary[TLSSocket, bytes] = WeakKeyDictionary()

    # -- the verify callback ---------------------------------------------

    def verify(self, conn: TLSSocket, cert: crypto.X509, errnum: int, errdepth: int, ok: int) -> bool:
        """A verify callback (pyOpenSSL signature) that forgives a missing issuer only after completing the chain."""
        if ok:
            return True
        if errnum in _AFTER_MISSING_ISSUER and conn in self._verified:
            if self._verified.get(conn) == _peer_leaf_der(conn):
                return True
        if errnum not in _MISSING_ISSUER or conn.server_side:
            return False
        return self._complete(conn, cert.to_cryptography())

    __call__ = verify

    def wrap(self, callback: VerifyCallback) -> VerifyCallback:
        """A verify callback that runs this fetcher, then *callback*.

        *callback* sees every invocation; where the fetcher completed the
        chain it sees ``errnum=0, ok=1``, and it can still reject.
        """

        def verify(conn: TLSSocket, cert: crypto.X509, errnum: int, errdepth: int, ok: int) -> bool:
            if not ok and self.verify(conn, cert, errnum, errdepth, ok):
                errnum, ok = X509_V_OK, 1
            return bool(callback(conn, cert, errnum, errdepth, ok))

        return verify

    def _complete(self, conn: TLSSocket, cert: x509.Certificate) -> bool:
        deadline = time.monotonic() + self.timeout
        host = conn.server_hostname
        try:
            if not host:
                raise FetchError("no server_hostname to verify the chain for")
            subject = _subject(host)
            chain = [c.to_cryptography() for c in conn.get_peer_cert_chain() or []]
            if not chain:
                raise FetchError("no peer certificate chain")
            fetched = self._fetch_up(cert, deadline)
            verifier = verification.PolicyBuilder().store(self._store).build_server_verifier(subject)
            verifier.verify(chain[0], [*chain[1:], *fetched])
        except (FetchError, verification.VerificationError, ValueError) as exc:
            self.stats.refused += 1
            log.debug("AIA: chain of %s not completed: %s", host, exc)
            return False
        except Exception as exc:  # unverified certificates may trip any parser: refuse, as OpenSSL did
            if isinstance(exc, Error):
                raise  # thrown in from outside (the connection was closed: CancelledError)
            self.stats.refused += 1
            log.warning("AIA: unexpected error completing the chain of %s", host, exc_info=True)
            return False
        self.stats.completed += 1
        self._verified[conn] = chain[0].public_bytes(serialization.Encoding.DER)
        return True

    def _fetch_up(self, cert: x509.Certificate, deadline: float) -> list[x509.Certificate]:
        """Fetch issuers from *cert* upwards until one is issued by (or is) a trust anchor."""
        found: list[x509.Certificate] = []
        current = cert
        for _ in range(self.max_chain_fetches):
            issuer, certificates = self._fetch_issuer(current, deadline)
            found.extend(certificates)
            if issuer.issuer in self._root_names or issuer.subject in self._root_names:
                return found
            current = issuer
        raise FetchError(f"no trust anchor within {self.max_chain_fetches} AIA fetches")

    def _fetch_issuer(self, cert: x509.Certificate, deadline: float) -> tuple[x509.Certificate, Certificates]:
        """The issuer of *cert* from its first caIssuers URL that serves it, and all that URL served."""
        urls = _ca_issuers_urls(cert)
        if not urls:
            raise FetchError(f"no http:// caIssuers URL in {cert.subject.rfc4514_string()}")
        reason = ""
        for url in urls:
            try:
                certificates = self._fetch(url, deadline)
            except FetchError as exc:
                reason = f"{url}: {exc}"
                continue
            issuer = next((c for c in certificates if _issued_by(cert, c)), None)
            if issuer is not None:
                return issuer, certificates
            reason = f"{url} does not serve the issuer of {cert.subject.rfc4514_string()}"
        raise FetchError(reason)

    # -- fetching, cached -------------------------------------------------

    def fetch(self, url: str, timeout: float | None = None) -> Certificates:
        """The certificates at *url* (cached); raises `FetchError`."""
        return self._fetch(url, time.monotonic() + (self.timeout if timeout is None else timeout))

    def _fetch(self, url: str, deadline: float) -> Certificates:
        outcome = self._cache.get(url)[1]  # a cached `_Outcome` is never None
        if outcome is not None:
            self.stats.cache_hits += 1
        elif (pending := self._in_flight.get(url)) is not None:
            # another greenlet is fetching this URL: wait for its answer instead of asking again
            try:
                outcome = self.driver.wait(pending, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise FetchError(f"timed out waiting for {url}") from None
        else:
            outcome = self._fetch_once(url, deadline)
        if outcome.certificates is None:
            raise FetchError(outcome.reason)
        return outcome.certificates

    def _fetch_once(self, url: str, deadline: float) -> _Outcome:
        pending: Future[_Outcome] = Future()
        self._in_flight[url] = pending
        outcome = _Outcome(None, "fetch interrupted")  # what waiters get if this greenlet is killed
        started = time.monotonic()
        try:
            try:
                body = http_get(
                    url,
                    driver=self.driver,
                    deadline=deadline,
                    max_bytes=self.max_bytes,
                    host_allowed=self._host_allowed,
                )
                certificates = parse_certificates(body)
                outcome = _Outcome(certificates, f"ok, {len(certificates)} certificate(s)")
            except FetchError as exc:
                outcome = _Outcome(None, str(exc))
            self.stats.fetches += 1
            ttl = self.negative_ttl if outcome.certificates is None else self.positive_ttl
            self._cache.put(url, outcome, ttl)
            log.info("AIA fetch %s: %s (%.0f ms)", url, outcome.reason, (time.monotonic() - started) * 1000)
        finally:
            del self._in_flight[url]
            pending.set_result(outcome)
        return outcome

    def _host_allowed(self, host: str) -> bool:
        return self.allow_hosts is None or _normal_host(host) in self.allow_hosts


# -- certificates ----------------------------------------------------------


def parse_certificates(body: bytes) -> Certificates:
    """Certificates from a caIssuers answer: DER, PEM, or PKCS#7 certs-only (DER or PEM)."""
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            if b"PKCS7" in body:
                certificates = pkcs7.load_pem_pkcs7_certificates(body)
            else:
                certificates = x509.load_pem_x509_certificates(body)
        else:
            try:
                certificates = [x509.load_der_x509_certificate(body)]
            except ValueError:
                certificates = pkcs7.load_der_pkcs7_certificates(body)
    except ValueError as exc:
        raise FetchError(f"not a certificate (DER, PEM or PKCS#7): {exc}") from None
    if not certificates:
        raise FetchError("no certificate in the answer")
    return tuple(certificates)


def load_roots(
    cafile: str | os.PathLike[str] | None = None, capath: str | os.PathLike[str] | None = None
) -> list[x509.Certificate]:
    """Trust anchors from a PEM file and/or a directory of PEM files (default: the system's)."""
    explicit = cafile is not None or capath is not None
    if not explicit:
        defaults = ssl.get_default_verify_paths()
        cafile, capath = defaults.cafile, defaults.capath
    roots: dict[bytes, x509.Certificate] = {}
    with warnings.catch_warnings():
        # system stores carry old roots (e.g. non-positive serials) that cryptography warns about
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        if cafile is not None:
            with open(cafile, "rb") as f:
                certificates = x509.load_pem_x509_certificates(f.read())
            roots.update((c.public_bytes(serialization.Encoding.DER), c) for c in certificates)
        if capath is not None:
            for entry in sorted(os.scandir(capath), key=lambda e: e.name):
                try:
                    with open(entry.path, "rb") as f:
                        certificates = x509.load_pem_x509_certificates(f.read())
                except (OSError, ValueError):
                    continue  # hash-link directories hold other files too
                roots.update((c.public_bytes(serialization.Encoding.DER), c) for c in certificates)
    if not roots:
        where = f"cafile={cafile!r}, capath={capath!r}"
        raise ValueError(f"no trust anchors found ({where}{'' if explicit else ', the system defaults'})")
    return list(roots.values())


def _ca_issuers_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(d.access_location.value)
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
        and str(d.access_location.value).lower().startswith("http://")
    ]


def _issued_by(cert: x509.Certificate, candidate: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(candidate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _peer_leaf_der(conn: TLSSocket) -> bytes | None:
    chain = conn.get_peer_cert_chain()
    if not chain:
        return None
    return chain[0].to_cryptography().public_bytes(serialization.Encoding.DER)


def _subject(host: str) -> x509.DNSName | x509.IPAddress:
    """The name to verify: an IP address, or a DNS name in its ASCII (A-label) form."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(_normal_host(host))


def _normal_host(host: str) -> str:
    """Lower case, no trailing dot, IDNA A-labels: how names are compared."""
    host = host.rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host  # not a valid IDNA name: compared as given, and DNSName() will refuse it
