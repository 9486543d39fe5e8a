"""Session stores: where an external TLS session cache keeps serialized sessions.

`MemoryStore` is the embedded default; `MemcachedStore` and `RedisStore`
share sessions between processes and machines.  `store_from_url` builds any
of them from a URL.  The networked stores import their client library
(pymemcache, redis-py) only when first used, so this package imports with
neither installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from ._common import MAX_KEY_LENGTH
from .memory import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, MemoryStore

if TYPE_CHECKING:
    from ...core._driver import Driver
    from .memcached import MemcachedStore
    from .redis_store import RedisStore

__all__ = [
    "SessionStore",
    "MemoryStore",
    "MemcachedStore",
    "RedisStore",
    "store_from_url",
    "MAX_KEY_LENGTH",
]


@runtime_checkable
class SessionStore(Protocol):
    """What the session cache needs from a store.

    Keys are 1-200 printable ASCII characters without spaces (anything else
    raises `ValueError`); values are `bytes`; *ttl* is whole seconds, >= 1.
    `get` returns None for a missing or expired key, `set` overwrites, `delete`
    of a missing key does nothing.  A networked store raises
    `pausetls.SessionStoreError` (``from`` the original exception) for
    any failure: refused, reset, timed out, protocol error, garbage reply; so
    does any store once closed.  Operations may wait through the store's
    driver (pausing a handshake) and may be interrupted by its timeouts or a
    kill without damaging the store.  A store that waits through a driver has
    ``bind(driver)``, which the session cache calls when a server installs it.
    A store whose operations never wait (`MemoryStore`) says so with
    ``writes_never_wait = True``: the session cache then stores a new session at once,
    inside the handshake, so the client's next connection can resume it.
    Every store here also has ``add(key, value, ttl) -> bool``, a set only if
    the key is absent (memcached ``add``, Redis ``SET NX``): `StoredTicketKeys`
    needs it, the session cache does not.
    """

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: int) -> None: ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


def __getattr__(name: str) -> Any:
    # The networked stores load on first use: their client libraries are optional.
    if name == "MemcachedStore":
        from .memcached import MemcachedStore

        return MemcachedStore
    if name == "RedisStore":
        from .redis_store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ACCEPTED_URLS = "memory://[?max_entries=N&max_bytes=N], memcached://host[:port], redis://[:password@]host[:port][/db]"


def store_from_url(url: str, *, timeout: float = 0.5, driver: Driver | None = None) -> SessionStore:
    """A store for *url*; *timeout* and *driver* go to the networked stores (without a driver, the
    server whose session cache the store is installed in gives its own).

    Accepted: ``memory://`` (``?max_entries=``, default 100000; ``&max_bytes=`` of keys and
    values, default 64 MiB),
    ``memcached://host[:port]`` (default 11211), ``redis://[:password@]host[:port][/db]``
    (default 6379, db 0).  IPv6 addresses go in brackets: ``memcached://[::1]:11211``.
    Nothing connects until the first operation.
    """
    if not isinstance(url, str):
        raise ValueError(f"session store URL must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"malformed session store URL {_redact(url)!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return _memory_store(url, parts)
    if scheme == "memcached":
        host, port = _host_port(url, parts, 11211)
        _expect_no_extras(url, parts, "memcached", userinfo=True)
        from .memcached import MemcachedStore

        return MemcachedStore(host, port, timeout=timeout, driver=driver)
    if scheme == "redis":
        host, port = _host_port(url, parts, 6379)
        _expect_no_extras(url, parts, "redis", userinfo=False)
        if parts.username:
            raise ValueError(f"redis URL {_redact(url)!r}: give only a password (redis://:password@host)")
        password = unquote(parts.password) if parts.password else None
        from .redis_store import RedisStore

        return RedisStore(host, port, _redis_db(url, parts), password=password, timeout=timeout, driver=driver)
    raise ValueError(f"unsupported session store URL {_redact(url)!r}: accepted are {ACCEPTED_URLS}")


_MEMORY_OPTIONS = ("max_entries", "max_bytes")


def _memory_store(url: str, parts: SplitResult) -> MemoryStore:
    if parts.netloc or parts.path not in ("", "/") or parts.fragment:
        raise ValueError(
            f"memory URL {url!r} takes no host or path: use memory:// or memory://?max_entries=N&max_bytes=N"
        )
    options = _query(url, parts)
    unknown = set(options) - set(_MEMORY_OPTIONS)
    if unknown:
        raise ValueError(
            f"memory URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(_MEMORY_OPTIONS)}"
        )
    for name, value in options.items():
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            raise ValueError(f"memory URL {url!r}: {name} must be a positive integer, not {value!r}")
    return MemoryStore(
        int(options.get("max_entries", DEFAULT_MAX_ENTRIES)), max_bytes=int(options.get("max_bytes", DEFAULT_MAX_BYTES))
    )


def _host_port(url: str, parts: SplitResult, default_port: int) -> tuple[str, int]:
    if not parts.hostname:
        raise ValueError(f"session store URL {_redact(url)!r} has no host")
    try:
        port = parts.port
    except ValueError as exc:  # not a number, or out of range
        raise ValueError(f"session store URL {_redact(url)!r}: bad port: {exc}") from exc
    if port == 0:
        raise ValueError(f"session store URL {_redact(url)!r}: port 0 is not a server port")
    return parts.hostname, default_port if port is None else port


def _expect_no_extras(url: str, parts: SplitResult, scheme: str, *, userinfo: bool) -> None:
    if userinfo and "@" in parts.netloc:
        raise ValueError(f"{scheme} URL {_redact(url)!r} takes no user or password")
    if scheme != "redis" and parts.path not in ("", "/"):
        raise ValueError(f"{scheme} URL {_redact(url)!r} takes no path")
    if parts.query or parts.fragment:
        raise ValueError(f"{scheme} URL {_redact(url)!r} takes no query or fragment")


def _redis_db(url: str, parts: SplitResult) -> int:
    db = parts.path.strip("/")
    if not db:
        return 0
    if not (db.isascii() and db.isdigit()):
        raise ValueError(f"redis URL {_redact(url)!r}: the path must be a database number, not {db!r}")
    return int(db)


def _query(url: str, parts: SplitResult) -> dict[str, str]:
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ValueError(f"session store URL {url!r}: malformed query: {exc}") from exc
    options = dict(pairs)
    if len(options) != len(pairs):
        raise ValueError(f"session store URL {url!r}: an option is repeated")
    return options


def _redact(url: str) -> str:
    """*url* with any password replaced, for error messages."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if not sep or "@" not in netloc:
        return url
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{hostport}{slash}{tail}"
