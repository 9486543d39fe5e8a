"""What ``pausetls serve`` checks before it serves: each finding is one warning line on ``pausetls.cli``.

None of these stops the server (each is a legitimate choice somewhere: a test
certificate about to expire, a store that comes up later); they say what will
go wrong and what to do about it.  Missing files are errors instead
(`require_files`): "no such file: PATH", rather than OpenSSL's
"system library: reason(2)".
"""

from __future__ import annotations

import datetime
import logging
import os
import stat
from argparse import Namespace
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import gevent
from cryptography import x509

from ..core.errors import MissingFileError
from ..sessions.stores import store_from_url

__all__ = [
    "check_files",
    "warn_at_start",
    "EXPIRY_WARNING_DAYS",
    "PROBE_TIMEOUT",
    "certificate_warning",
    "keylog_warning",
    "private_file_warnings",
    "require_files",
    "sharing_warnings",
    "store_probe_warning",
]

log = logging.getLogger("pausetls.cli")

SHARED_SCHEMES = ("memcached", "redis")
EXPIRY_WARNING_DAYS = 30
_READERS = ((stat.S_IRGRP, "group"), (stat.S_IROTH, "others"))
PROBE_TIMEOUT = 1.0  # seconds the start-up probe of a store may take (the server waits for it)


def check_files(args: Namespace) -> None:
    """``serve``'s input files exist (`MissingFileError`, "no such file: PATH", for the first that does not)."""
    require_files(
        [
            ("certificate chain", args.cert),
            ("private key", args.key),
            ("CA file", args.cafile),
            ("session key file", args.session_key_file),
        ]
    )


def warn_at_start(args: Namespace) -> None:
    """Log ``serve``'s warnings: one line each, before it serves."""
    warn(sharing_warnings(args.session_store, args.session_key_file, args.workers))
    warn([None if args.cert is None else certificate_warning(args.cert)])
    secrets = [("private key", args.key), ("session key file", args.session_key_file), ("key log file", args.keylog)]
    warn(private_file_warnings(secrets))
    warn([store_probe_warning(args.session_store)])
    warn([None if args.keylog is None else keylog_warning(args.keylog)])


def require_files(files: Iterable[tuple[str, str | os.PathLike[str] | None]]) -> None:
    """`MissingFileError` for the first of the (what, path) pairs whose file does not exist."""
    for what, path in files:
        if path is not None and not os.path.exists(path):
            raise MissingFileError(os.fspath(path), what)


def sharing_warnings(store_url: str, key_file: str | None, workers: int) -> list[str]:
    """Session sharing that silently does not happen: a shared store without a key file, workers on memory://."""
    scheme = urlsplit(store_url).scheme.lower()
    warnings = []
    if scheme in SHARED_SCHEMES and key_file is None:
        warnings.append(
            f"warning: --session-store {scheme}://... without --session-key-file: this server seals its sessions "
            "with a key made at start, so other servers sharing the store never resume them; make a key file "
            "with 'pausetls keys new FILE' and give every server --session-key-file FILE"
        )
    if scheme == "memory" and workers > 1:
        warnings.append(
            f"warning: --workers {workers} with --session-store memory://: each worker keeps its own sessions, so "
            "a client resumes only when it reaches the same worker again; give the workers a shared store "
            "(--session-store memcached://HOST:PORT or redis://HOST:PORT)"
        )
    return warnings


def certificate_warning(
    cert_file: str | os.PathLike[str], now: datetime.datetime | None = None, days: int = EXPIRY_WARNING_DAYS
) -> str | None:
    """A warning if the first certificate of *cert_file* has expired or expires within *days*."""
    try:
        leaf = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())[0]
    except (OSError, ValueError):
        return None  # loading it into the Context reports what is wrong with it
    now = now or datetime.datetime.now(datetime.UTC)
    expiry = leaf.not_valid_after_utc
    when = expiry.strftime("%Y-%m-%d %H:%M UTC")
    if expiry <= now:
        return f"warning: the certificate in {cert_file} expired on {when}: clients will refuse it"
    left = expiry - now
    if left < datetime.timedelta(days=days):
        return f"warning: the certificate in {cert_file} expires on {when} (in {left.days} days): renew it"
    return None


def private_file_warnings(files: Iterable[tuple[str, str | os.PathLike[str] | None]]) -> list[str]:
    """A warning for each secret file (what, path) that group or others may read."""
    warnings = []
    for what, path in files:
        if path is None:
            continue
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            continue  # missing files are require_files's to report
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            readers = " and ".join(who for bit, who in _READERS if mode & bit)
            warnings.append(
                f"warning: the {what} {path} is readable by {readers} (mode {mode:04o}): run 'chmod 600 {path}'"
            )
    return warnings


def store_probe_warning(store_url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """A warning if a shared store does not answer one lookup within *timeout* seconds (its own store, closed
    after: pre-forked workers must not inherit its connections)."""
    parts = urlsplit(store_url)
    if parts.scheme.lower() not in SHARED_SCHEMES:
        return None
    from ..drivers.gevent import gevent_driver

    where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")  # never the password
    store = store_from_url(store_url, timeout=timeout, driver=gevent_driver)
    try:
        with gevent.Timeout(2 * timeout, TimeoutError(f"no answer in {2 * timeout:g} s")):
            store.get("pausetls-start-probe")
    except (Exception, gevent.Timeout) as exc:  # noqa: BLE001 - any failure is what the warning reports
        return (
            f"warning: session store {where} does not answer ({type(exc).__name__}: {exc}): handshakes are full "
            "ones until it does; later store failures are logged at most once per 10 s"
        )
    finally:
        store.close()
    return None


def keylog_warning(path: str) -> str:
    return (
        f"warning: --keylog {path}: the TLS secrets of every connection are appended to it, and anyone who can "
        "read it can decrypt the traffic; use it for debugging only, and delete it after"
    )


def warn(messages: Iterable[str | None]) -> None:
    for message in messages:
        if message is not None:
            log.warning("%s", message)
