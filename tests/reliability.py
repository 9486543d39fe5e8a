"""Helpers for the reliability tests: clients that misbehave, and one that behaves alongside them.

`healthy_client` runs a well-behaved client alongside a hostile one.
`MemoryBIOClient` is CPython's TLS client over memory BIOs, so a test
decides how its bytes reach the wire (1-byte writes, a reset at a chosen
moment).  `exchange` is a plain TCP client for bytes that are not TLS.
The ``watch`` fixture (on the server's health) lives in ``health.py``.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import gevent.socket
import pytest

import pausetls

from conftest import make_server_context
from gates import GENEROUS
from peers import PeerGroup
from pki import PKI, Issued

MUTUAL = pausetls.VERIFY_PEER | pausetls.VERIFY_FAIL_IF_NO_PEER_CERT
HOST = "127.0.0.1"
Verify = Callable[[pausetls.TLSSocket, Any, int, int, int], Any]


def mutual_context(pki: PKI, server_cert: Issued, version: int | None, verify: Verify | None) -> pausetls.Context:
    """A server context that requires a client certificate from *pki*, checked by *verify*."""
    ctx = make_server_context(server_cert, version)
    ctx.load_verify_locations(pki.ca_path)
    ctx.set_verify(MUTUAL, verify)
    return ctx


def ping(port: int, ctx: ssl.SSLContext, timeout: float = GENEROUS) -> bytes:
    """A CPython ssl client (cooperative through gevent.ssl): handshake, send b"ping", read the answer."""
    with gevent.socket.create_connection((HOST, port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            return tls.recv(100)


def outcome(port: int, ctx: ssl.SSLContext) -> bytes | str:
    """What a client got: the server's answer (b"" when closed), or the name of the error it saw."""
    try:
        return ping(port, ctx)
    except (OSError, ssl.SSLError) as exc:
        return type(exc).__name__


def connect_once(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None, server_hostname: str = "localhost"
) -> tuple[ssl.SSLSession | None, bool, bytes]:
    """(session, reused, the server's answer) of one connection; the answer is b"" when the server refused."""
    with gevent.socket.create_connection((HOST, port), timeout=GENEROUS) as sock:
        try:
            with ctx.wrap_socket(sock, server_hostname=server_hostname, session=session) as tls:
                tls.sendall(b"x")
                answer = tls.recv(10)  # TLS 1.3: the session ticket comes with it
                return tls.session, bool(tls.session_reused), answer
        except (ssl.SSLError, OSError):  # TLS 1.2: during the handshake; TLS 1.3: at the first read
            return None, False, b""


@contextmanager
def healthy_client(port: int, ctx: ssl.SSLContext) -> Iterator[None]:
    """A well-behaved client connects while the body runs (its connection overlaps the body's) and must be served."""
    client = gevent.spawn(ping, port, ctx)
    yield
    assert client.get(timeout=GENEROUS) == b"ping"


def client_hello(version: ssl.TLSVersion | None = None) -> bytes:
    """The first flight of a real CPython ssl client (offering only *version*, if given): one TLS record
    holding its ClientHello."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    outgoing = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def exchange(port: int, payload: bytes, *, close_write: bool = True, timeout: float = 10) -> bytes:
    """Send *payload* on a plain TCP connection, then read what the server sends until it closes.

    Raises `AssertionError` if the server does not close within *timeout*.
    """
    received = b""
    with gevent.socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # a close with unread data in the server's buffer is a reset: still a clean end
        except TimeoutError as exc:
            raise AssertionError(f"the server kept the connection open; it sent {received[:20]!r}") from exc
    return received


def is_alert_or_nothing(data: bytes) -> bool:
    """A server that refuses a connection sends a fatal alert record, or nothing before closing."""
    return data == b"" or (data[0] == 0x15 and len(data) >= 7)


def is_alert_nothing_or_server_hello(data: bytes) -> bool:
    """For mutated ClientHellos: a mutation may still be a valid hello (say, an old record-layer
    version), which the server answers with its own hello before the client's EOF ends it."""
    return is_alert_or_nothing(data) or data[:1] == b"\x16"


def s_client_argv(openssl: str, pki: PKI, port: int, *extra: str) -> list[str]:
    """``openssl s_client`` trusting *pki*, with only application data on stdout (``-quiet``), closing
    with close_notify when stdin ends (``-no_ign_eof``)."""
    argv = [openssl, "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(pki.ca_path), "-quiet", "-no_ign_eof"]
    return argv + list(extra)


def s_client_echo(peers: PeerGroup, openssl: str, pki: PKI, port: int, version: int, *extra: str) -> bytes:
    """What ``openssl s_client`` trusting *pki* at *version* (with *extra* flags: SNI, ``-sess_in``/``-sess_out``,
    a certificate) printed for one connection that sends ``ping`` and waits for its echo (not ``-quiet``:
    the output says ``New,`` or ``Reused,``)."""
    flag = "-tls1_3" if version == pausetls.TLS1_3_VERSION else "-tls1_2"
    argv = [openssl, "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(pki.ca_path), "-no_ign_eof", flag]
    peer = peers.process([*argv, *extra])
    peer.write(b"ping\n")
    try:
        peer.wait_output(b"ping\n")  # served: the handshake is done (a TLS 1.3 ticket arrived before the echo)
        peer.close_stdin()
    except AssertionError:
        pass  # refused: s_client ends by itself
    peer.wait()
    return bytes(peer.stdout.data)


def client_cert_args(client: Issued, pki: PKI) -> list[str]:
    """s_client flags that present *client* (leaf, key and intermediate)."""
    chain = str(pki.intermediate.cert_path)
    return ["-cert", str(client.cert_path), "-key", str(client.key_path), "-cert_chain", chain]


def set_linger_zero(sock: Any) -> None:
    """Make close() send a TCP reset instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class MemoryBIOClient:
    """CPython's TLS client over memory BIOs on a gevent socket, writing *chunk* bytes per send.

    With ``chunk=1`` and a *gap*, every TLS record reaches the server one byte at a time.
    """

    def __init__(self, port: int, ctx: ssl.SSLContext, *, chunk: int = 65536, gap: float = 0.0) -> None:
        self.sock = gevent.socket.create_connection((HOST, port), timeout=GENEROUS)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self._incoming, self._outgoing, server_hostname="localhost")
        self.chunk = chunk
        self.gap = gap

    def _flush(self) -> None:
        data = self._outgoing.read()
        for start in range(0, len(data), self.chunk):
            self.sock.sendall(data[start : start + self.chunk])
            if self.gap:
                gevent.sleep(self.gap)  # let the server read this piece on its own

    def _drive(self, operation: Callable[..., Any], *args: Any) -> Any:
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush()
            return result

    def handshake(self) -> None:
        self._drive(self.tls.do_handshake)

    def send(self, data: bytes) -> None:
        self._drive(self.tls.write, data)

    def recv(self, size: int = 65536) -> bytes:
        return bytes(self._drive(self.tls.read, size))

    def reset(self) -> None:
        set_linger_zero(self.sock)
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
