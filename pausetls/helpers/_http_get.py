"""A minimal HTTP/1.1 GET over a driver's sockets, for fetching CA certificates (AIA caIssuers).

Only what CA certificate servers need: plain ``http://`` (the URL comes from
an unverified certificate, so TLS would only add a circular dependency), one
request per connection, a body by Content-Length, chunks or read-to-EOF, and
at most `MAX_REDIRECTS` redirects.  Every limit is hard: the caller's
deadline covers DNS, connect, send, every read and every redirect; the body
and the header block have size bounds; anything unexpected is a `FetchError`.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urljoin, urlsplit

from ..core.errors import Error, TimeoutError

if TYPE_CHECKING:
    from ..core._driver import Driver

__all__ = ["FetchError", "http_get", "MAX_REDIRECTS"]

MAX_REDIRECTS = 3
MAX_HEADER_BYTES = 16384
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?")
# printable ASCII without spaces: the URL comes from a certificate and must not inject headers
_SAFE = re.compile(r"[\x21-\x7e]+")


class FetchError(Error):
    """A CA certificate could not be fetched (refused, timed out, too big, not HTTP 200, not a certificate)."""


def http_get(
    url: str, *, driver: Driver, deadline: float, max_bytes: int, host_allowed: Callable[[str], bool] | None = None
) -> bytes:
    """The body of a 200 answer to ``GET url``, following up to `MAX_REDIRECTS` http:// redirects.

    Sockets and the time limit come from *driver*; *deadline* is a
    `time.monotonic` value; *host_allowed(host)* may refuse a host (the first
    URL's and every redirect's).
    """
    for _ in range(MAX_REDIRECTS + 1):
        target = _parse(url)
        host = target.hostname or ""
        if host_allowed is not None and not host_allowed(host):
            raise FetchError(f"host {host!r} is not in allow_hosts")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("timed out")
        # the driver's own timer raises pausetls.TimeoutError: a timeout from outside passes as itself
        try:
            answer: tuple[int, dict[str, str], bytes] = driver.call_with_timeout(
                _request, remaining, driver.socket_module, target, remaining, max_bytes
            )
            status, headers, body = answer
        except TimeoutError as exc:
            raise FetchError(f"timed out after {remaining:.1f} s") from exc
        except OSError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc
        if status == 200:
            return body
        if status in _REDIRECT_STATUSES and "location" in headers:
            url = urljoin(url, headers["location"])
            continue
        raise FetchError(f"HTTP status {status}")
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _parse(url: str) -> SplitResult:
    if not _SAFE.fullmatch(url):
        raise FetchError(f"not a plain ASCII URL: {url!r}")
    target = urlsplit(url)
    if target.scheme.lower() != "http":
        raise FetchError(f"only http:// URLs are fetched, not {url!r}")
    if not target.hostname or target.username is not None:
        raise FetchError(f"no host, or a user name, in {url!r}")
    try:
        target.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise FetchError(f"bad port in {url!r}") from exc
    return target


def _request(
    socket_module: Any, target: SplitResult, timeout: float, max_bytes: int
) -> tuple[int, dict[str, str], bytes]:
    host = target.hostname or ""
    port = target.port or 80
    host_header = f"[{host}]" if ":" in host else host
    if port != 80:
        host_header += f":{port}"
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: pausetls-aia\r\n"
        "Accept: application/pkix-cert, application/pkcs7-mime, */*\r\nConnection: close\r\n\r\n"
    )
    sock = socket_module.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(request.encode("ascii"))
        reader = _Reader(sock)
        status, headers = _parse_head(reader.read_until(b"\r\n\r\n", MAX_HEADER_BYTES))
        if status != 200:
            return status, headers, b""  # a redirect's or error's body is never needed
        return status, headers, _read_body(reader, headers, max_bytes)
    finally:
        sock.close()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, _, rest = head.partition(b"\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise FetchError(f"not an HTTP/1.x answer: {status_line[:60]!r}")
    headers: dict[str, str] = {}
    for line in rest.split(b"\r\n"):
        if not line:
            continue
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise FetchError(f"malformed header line {line[:60]!r}")
        name, value = name.lower(), value.strip()
        if name in headers and headers[name] != value and name in ("content-length", "transfer-encoding"):
            raise FetchError(f"conflicting {name} headers")
        headers[name] = value
    return int(match.group(1)), headers


def _read_body(reader: _Reader, headers: dict[str, str], max_bytes: int) -> bytes:
    encoding = headers.get("transfer-encoding", "").lower()
    if encoding == "chunked":
        return _read_chunked(reader, max_bytes)
    if encoding:
        raise FetchError(f"unsupported Transfer-Encoding {encoding!r}")
    if "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit():
            raise FetchError(f"bad Content-Length {length!r}")
        if int(length) > max_bytes:
            raise FetchError(f"body of {length} bytes is larger than max_bytes={max_bytes}")
        return reader.read_exact(int(length))
    return reader.read_to_eof(max_bytes)


def _read_chunked(reader: _Reader, max_bytes: int) -> bytes:
    body = bytearray()
    while True:
        size_field = reader.read_until(b"\r\n", 1024)[:-2].split(b";")[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise FetchError(f"bad chunk size {size_field[:20]!r}") from None
        if size == 0:
            return bytes(body)  # trailers are not needed: the connection closes
        if len(body) + size > max_bytes:
            raise FetchError(f"body is larger than max_bytes={max_bytes}")
        body += reader.read_exact(size)
        if reader.read_exact(2) != b"\r\n":
            raise FetchError("malformed chunk")


class _Reader:
    """Buffered reads from a socket, each one bounded."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._sock.recv(65536)
        self._eof = not chunk
        self._buffer += chunk
        return bool(chunk)

    def read_until(self, delimiter: bytes, limit: int) -> bytes:
        """Up to and including *delimiter*, which must come within *limit* bytes."""
        while (end := self._buffer.find(delimiter)) < 0:
            if len(self._buffer) > limit:
                raise FetchError(f"no {delimiter!r} within {limit} bytes")
            if not self._fill():
                raise FetchError("connection closed in the middle of the answer")
        end += len(delimiter)
        if end > limit:
            raise FetchError(f"no {delimiter!r} within {limit} bytes")
        return self._take(end)

    def read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                raise FetchError(f"connection closed after {len(self._buffer)} of {size} bytes")
        return self._take(size)

    def read_to_eof(self, limit: int) -> bytes:
        while True:
            if len(self._buffer) > limit:
                raise FetchError(f"body is larger than max_bytes={limit}")
            if not self._fill():
                return self._take(len(self._buffer))

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data
