"""`pausetls.AIAFetcher`: a server that leaves out its intermediate, the issuer fetched mid-handshake.

Real peers on loopback: ``openssl s_server`` (or a `TLSServer` for the
concurrency test) sends only its leaf, whose AIA caIssuers URL points at a
small gevent HTTP server started by the test, which counts its requests and
can be slow, broken or absent.  The client trusts only the root.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from gevent import socket as gsocket
from gevent.pool import Pool
from gevent.server import StreamServer

import pausetls
from pausetls.helpers.aia import FetchError

from conftest import wait_until
from gates import GENEROUS
from peers import DEFAULT_TIMEOUT, OpenSSLServer, PeerGroup
from pki import PKI, Issued
from servers import free_port

S_FLAG = {pausetls.TLS1_2_VERSION: "-tls1_2", pausetls.TLS1_3_VERSION: "-tls1_3"}
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
MISSING_ISSUER = "unable to get local issuer certificate"
_leaf_numbers = itertools.count()

Route = Callable[[Any], None]  # writes the whole answer to the client socket


# -- a tiny HTTP server for CA certificates -----------------------------------------


def http_answer(body: bytes, *, status: str = "200 OK", headers: tuple[str, ...] = (), length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/pkix-cert", "Connection: close", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def serve(body: bytes, **kwargs: Any) -> Route:
    return lambda sock: sock.sendall(http_answer(body, **kwargs))


def serve_slowly(delay: float, body: bytes) -> Route:
    def route(sock: Any) -> None:
        gevent.sleep(delay)
        sock.sendall(http_answer(body))

    return route


def serve_endless(sock: Any) -> None:
    """A 200 without Content-Length that never stops (until 16 MiB or the client hangs up)."""
    sock.sendall(http_answer(b"", length=False))
    for _ in range(256):
        sock.sendall(b"\x30" * 65536)


class IssuerServer:
    """HTTP/1.1 on loopback: ``routes[path]`` answers; every request path is recorded."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        # a pool, so that stop() kills handlers still sleeping (slow answers)
        self._server = StreamServer(("127.0.0.1", 0), self._handle, spawn=Pool(200))
        self._server.start()
        self.port: int = self._server.server_port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def _handle(self, sock: Any, address: Any) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk or len(head) > 65536:
                    return
                head += chunk
            path = head.split(b" ", 2)[1].decode()
            self.requests.append(path)
            self.routes.get(path, serve(b"not found", status="404 Not Found"))(sock)
        except OSError:
            pass  # the client gave up (timeout, too big): expected in several tests

    def stop(self) -> None:
        self._server.stop(timeout=0.2)


@pytest.fixture
def issuers() -> Iterator[IssuerServer]:
    server = IssuerServer()
    try:
        yield server
    finally:
        server.stop()


# -- helpers ---------------------------------------------------------------------


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


def leaf_with_aia(pki: PKI, url: str, issuer: Issued | None = None) -> Issued:
    """A server certificate for localhost whose caIssuers URL is *url* (a fresh name each time)."""
    return pki.issue(f"aia leaf {next(_leaf_numbers)}", issuer=issuer, ca_issuers=url)


def leaf_only_s_server(
    peers: PeerGroup, openssl: str, leaf: Issued, *, version: int = pausetls.TLS1_3_VERSION, naccept: int = 1
) -> OpenSSLServer:
    """``openssl s_server -rev`` sending *leaf* alone: no intermediate in its chain."""
    args = ["-cert", str(leaf.cert_path), "-key", str(leaf.key_path), S_FLAG[version], "-rev"]
    return peers.s_server(openssl, args, naccept=naccept)


def aia_context(pki: PKI, fetcher: pausetls.AIAFetcher | None) -> pausetls.Context:
    ctx = pausetls.client_context(str(pki.ca_path))
    if fetcher is not None:
        ctx.set_verify(pausetls.VERIFY_PEER, fetcher.verify)
    return ctx


def connect(port: int, ctx: pausetls.Context, host: str = "localhost") -> pausetls.TLSSocket:
    return pausetls.connect(("127.0.0.1", port), ctx, server_hostname=host, timeout=DEFAULT_TIMEOUT)


def refused(port: int, ctx: pausetls.Context, host: str = "localhost") -> tuple[pausetls.VerificationError, float]:
    """Connect expecting a verification failure; the error and how long it took."""
    started = time.monotonic()
    with pytest.raises(pausetls.VerificationError) as info:
        connect(port, ctx, host).close()
    return info.value, time.monotonic() - started


def exchange(tls: pausetls.TLSSocket) -> None:
    """One line through ``s_server -rev``: the connection really works."""
    tls.sendall(b"hello aia\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = tls.recv(4096)
        assert chunk, "server closed early"
        data += chunk
    assert data == b"aia olleh\n"


# -- 1. the intermediate is fetched, once -------------------------------------------


def test_fetches_missing_intermediate_once(
    tls_version: int, openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    leaf = leaf_with_aia(pki, issuers.route("/int.der", serve(der(pki.intermediate))))
    server = leaf_only_s_server(peers, openssl, leaf, version=tls_version, naccept=2)
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path)
    ctx = aia_context(pki, fetcher)
    for _ in range(2):
        with connect(server.port, ctx) as tls:
            chain = tls.get_peer_cert_chain()
            assert chain is not None and len(chain) == 1  # the server really sent its leaf alone
            exchange(tls)
    assert issuers.requests == ["/int.der"]
    assert (fetcher.stats.fetches, fetcher.stats.cache_hits, fetcher.stats.completed) == (1, 1, 2)


def test_ip_address_as_host_name(openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup) -> None:
    leaf = leaf_with_aia(pki, issuers.route("/int.der", serve(der(pki.intermediate))))
    server = leaf_only_s_server(peers, openssl, leaf)
    with connect(server.port, aia_context(pki, pausetls.AIAFetcher(cafile=pki.ca_path)), host="127.0.0.1") as tls:
        exchange(tls)


def test_trust_anchors_are_required(tmp_path: Path, pki: PKI) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    with pytest.raises(ValueError):
        pausetls.AIAFetcher(cafile=empty)
    with pytest.raises(ValueError, match="no trust anchors"):
        pausetls.AIAFetcher(capath=tmp_path)
    with pytest.raises(ValueError):
        pausetls.AIAFetcher(cafile=pki.ca_path, timeout=0)


# -- 2. without the helper ------------------------------------------------------------


def test_without_fetcher_fails_with_missing_issuer(
    openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    leaf = leaf_with_aia(pki, issuers.route("/int.der", serve(der(pki.intermediate))))
    server = leaf_only_s_server(peers, openssl, leaf)
    error, _ = refused(server.port, aia_context(pki, None))
    assert MISSING_ISSUER in str(error)
    assert error.verify_code == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert issuers.requests == []


# -- 3. failing closed -------------------------------------------------------------------


def test_issuer_server_down_fails_quickly(openssl: str, pki: PKI, peers: PeerGroup) -> None:
    leaf = leaf_with_aia(pki, f"http://127.0.0.1:{free_port()}/int.der")
    server = leaf_only_s_server(peers, openssl, leaf)
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path, timeout=2 * GENEROUS)
    error, elapsed = refused(server.port, aia_context(pki, fetcher))
    assert MISSING_ISSUER in str(error)
    assert elapsed < GENEROUS  # at the refused connect, not at the fetch timeout
    assert (fetcher.stats.fetches, fetcher.stats.refused) == (1, 1)


def test_slow_issuer_server_fails_within_timeout(
    openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    timeout = 1.0
    leaf = leaf_with_aia(pki, issuers.route("/slow.der", serve_slowly(2 * GENEROUS, der(pki.intermediate))))
    server = leaf_only_s_server(peers, openssl, leaf)
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path, timeout=timeout)
    error, elapsed = refused(server.port, aia_context(pki, fetcher))
    assert MISSING_ISSUER in str(error)
    assert timeout - 0.1 < elapsed < GENEROUS  # at the fetch timeout, not at the slow answer
    assert issuers.requests == ["/slow.der"]


BROKEN_ANSWERS: dict[str, Route] = {
    "garbage-body": serve(b"this is not a certificate"),
    "not-http": lambda sock: sock.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
    "huge-content-length": serve(b"\x30" * 200_000),
    "huge-endless-body": serve_endless,
    "truncated": lambda sock: sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n" + b"\x30" * 100),
    "not-found": serve(b"gone", status="404 Not Found"),
    "redirect-to-https": serve(b"", status="302 Found", headers=("Location: https://127.0.0.1/int.der",)),
}


@pytest.mark.parametrize("answer", sorted(BROKEN_ANSWERS))
def test_broken_answer_fails_closed(
    answer: str, openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    leaf = leaf_with_aia(pki, issuers.route("/int.der", BROKEN_ANSWERS[answer]))
    server = leaf_only_s_server(peers, openssl, leaf)
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path, timeout=2 * GENEROUS)
    error, elapsed = refused(server.port, aia_context(pki, fetcher))
    assert MISSING_ISSUER in str(error)
    assert elapsed < GENEROUS  # refused for what the answer is, not at the fetch timeout
    assert issuers.requests == ["/int.der"]


def test_issuer_from_an_untrusted_pki_fails_closed(
    openssl: str, pki: PKI, other_pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    """The fetched intermediate does issue the leaf, but chains to a root the client does not trust."""
    url = issuers.route("/other.der", serve(der(other_pki.intermediate)))
    server = leaf_only_s_server(peers, openssl, leaf_with_aia(other_pki, url))
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path)
    error, _ = refused(server.port, aia_context(pki, fetcher))
    assert MISSING_ISSUER in str(error)
    assert issuers.requests == ["/other.der"]
    assert fetcher.stats.completed == 0


def test_served_certificate_not_the_issuer_fails_closed(
    openssl: str, pki: PKI, other_pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    leaf = leaf_with_aia(pki, issuers.route("/wrong.der", serve(der(other_pki.intermediate))))
    server = leaf_only_s_server(peers, openssl, leaf)
    error, _ = refused(server.port, aia_context(pki, pausetls.AIAFetcher(cafile=pki.ca_path)))
    assert MISSING_ISSUER in str(error)
    assert issuers.requests == ["/wrong.der"]


def test_wrong_host_name_fails_closed_after_fetching(
    openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    leaf = leaf_with_aia(pki, issuers.route("/int.der", serve(der(pki.intermediate))))
    server = leaf_only_s_server(peers, openssl, leaf)
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path)
    error, _ = refused(server.port, aia_context(pki, fetcher), host="other.example")
    assert MISSING_ISSUER in str(error)
    assert issuers.requests == ["/int.der"]  # the fetch worked; the name did not match
    assert (fetcher.stats.completed, fetcher.stats.refused) == (0, 1)


def test_allow_hosts_refuses_other_hosts_without_asking(
    openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    leaf = leaf_with_aia(pki, issuers.route("/int.der", serve(der(pki.intermediate))))
    server = leaf_only_s_server(peers, openssl, leaf)
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path, allow_hosts=["ca.example"])
    error, _ = refused(server.port, aia_context(pki, fetcher))
    assert MISSING_ISSUER in str(error)
    assert issuers.requests == []


# -- 4. concurrency ----------------------------------------------------------------------


def test_concurrent_connects_share_one_slow_fetch(
    pki: PKI, issuers: IssuerServer, start_server: Callable[..., pausetls.TLSServer]
) -> None:
    delay, clients = 0.3, 50
    leaf = leaf_with_aia(pki, issuers.route("/int.der", serve_slowly(delay, der(pki.intermediate))))
    server_ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    server_ctx.use_certificate_file(str(leaf.cert_path))  # no chain: the leaf alone
    server_ctx.use_privatekey_file(str(leaf.key_path))
    server = start_server(server_ctx)
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path)
    ctx = aia_context(pki, fetcher)

    def one() -> bytes:
        with connect(server.server_port, ctx) as tls:
            tls.sendall(b"ping")
            return tls.recv(16)

    jobs = [gevent.spawn(one) for _ in range(clients)]
    gevent.joinall(jobs, timeout=2 * GENEROUS, raise_error=True)
    assert [job.value for job in jobs] == [b"ping"] * clients
    assert issuers.requests == ["/int.der"]  # waiters shared the one fetch in flight
    assert fetcher.stats.completed == clients


def test_closing_the_connection_cancels_a_paused_fetch(
    openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    leaf = leaf_with_aia(pki, issuers.route("/slow.der", serve_slowly(2 * GENEROUS, der(pki.intermediate))))
    server = leaf_only_s_server(peers, openssl, leaf)
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path, timeout=2 * GENEROUS)
    sock = gsocket.create_connection(("127.0.0.1", server.port), timeout=DEFAULT_TIMEOUT)
    tls = pausetls.TLSSocket(
        aia_context(pki, fetcher), sock, server_side=False, driver=pausetls.gevent_driver, server_hostname="localhost"
    )

    def handshake() -> pausetls.Error | None:
        try:
            tls.do_handshake()
        except pausetls.Error as exc:
            return exc
        return None

    job = gevent.spawn(handshake)
    assert wait_until(lambda: issuers.requests == ["/slow.der"])
    started = time.monotonic()
    tls.close()
    error = job.get(timeout=GENEROUS)
    assert time.monotonic() - started < GENEROUS  # by the close, not at the fetch timeout
    # the cancellation went through the fetch (not swallowed as a refusal) to the callback's error
    assert isinstance(error, pausetls.CallbackError) and isinstance(error.__cause__, pausetls.CancelledError)
    assert (fetcher.stats.completed, fetcher.stats.refused) == (0, 0)


# -- chains, callbacks, formats -----------------------------------------------------------


def test_fetches_up_two_levels(openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup) -> None:
    """root > intermediate > sub CA > leaf; the server sends the leaf, the fetcher gets both CAs."""
    n = next(_leaf_numbers)
    sub = pki.sub_ca(f"aia sub ca {n}", pki.intermediate, ca_issuers=issuers.url("/int.der"))
    issuers.route("/int.der", serve(der(pki.intermediate)))
    leaf = leaf_with_aia(pki, issuers.route("/sub.der", serve(der(sub))), issuer=sub)
    server = leaf_only_s_server(peers, openssl, leaf)
    with connect(server.port, aia_context(pki, pausetls.AIAFetcher(cafile=pki.ca_path))) as tls:
        exchange(tls)
    assert issuers.requests == ["/sub.der", "/int.der"]


def test_missing_issuer_above_a_sent_intermediate(
    openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    """The server sends leaf + sub CA; the sub CA's own issuer is missing (error at depth 1)."""
    n = next(_leaf_numbers)
    sub = pki.sub_ca(
        f"aia sub ca {n}", pki.intermediate, ca_issuers=issuers.route("/int.der", serve(der(pki.intermediate)))
    )
    leaf = pki.issue(f"aia leaf {n}", issuer=sub)  # no AIA: the leaf's issuer is sent
    args = ["-cert", str(leaf.cert_path), "-key", str(leaf.key_path), "-cert_chain", str(sub.cert_path), "-rev"]
    server = peers.s_server(openssl, args)
    depths: list[tuple[int, int, int]] = []

    def record(conn: pausetls.TLSSocket, cert: Any, errnum: int, depth: int, ok: int) -> bool:
        depths.append((depth, errnum, ok))
        return bool(ok)

    ctx = pausetls.client_context(str(pki.ca_path))
    ctx.set_verify(pausetls.VERIFY_PEER, pausetls.AIAFetcher(cafile=pki.ca_path).wrap(record))
    with connect(server.port, ctx) as tls:
        exchange(tls)
    assert issuers.requests == ["/int.der"]
    assert depths == [(1, 0, 1), (0, 0, 1)]  # the callback saw the completed chain as OpenSSL's "yes"


def test_wrapped_callback_sees_completed_chain_and_may_reject(
    openssl: str, pki: PKI, issuers: IssuerServer, peers: PeerGroup
) -> None:
    leaf = leaf_with_aia(pki, issuers.route("/int.der", serve(der(pki.intermediate))))
    server = leaf_only_s_server(peers, openssl, leaf, naccept=2)
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path)
    calls: list[tuple[int, int, int]] = []

    def user_callback(conn: pausetls.TLSSocket, cert: Any, errnum: int, depth: int, ok: int) -> bool:
        gevent.sleep(0.01)  # it may pause too
        calls.append((depth, errnum, ok))
        return bool(ok)

    ctx = pausetls.client_context(str(pki.ca_path))
    ctx.set_verify(pausetls.VERIFY_PEER, fetcher.wrap(user_callback))
    with connect(server.port, ctx) as tls:
        exchange(tls)
    assert calls and all(call == (0, 0, 1) for call in calls)

    ctx.set_verify(pausetls.VERIFY_PEER, fetcher.wrap(lambda *args: bool(calls.append(args[2:]))))
    calls.clear()
    error, _ = refused(server.port, ctx)
    assert calls == [(0, 0, 1)]  # its "no" to the completed chain stands (reported as the original reason)
    assert error.verify_code == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert issuers.requests == ["/int.der"]


def test_fetch_formats_and_http_framing(pki: PKI, issuers: IssuerServer) -> None:
    """DER, PEM, PKCS#7 (DER .p7c and PEM), chunked, read-to-EOF and a redirect all give the intermediate."""
    cert = pki.intermediate.cert
    pem = cert.public_bytes(serialization.Encoding.PEM)
    body = der(pki.intermediate)
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    routes = {
        "/der": serve(body),
        "/pem": serve(pem),
        "/p7c": serve(pkcs7.serialize_certificates([cert], serialization.Encoding.DER)),
        "/p7b": serve(pkcs7.serialize_certificates([cert], serialization.Encoding.PEM)),
        "/chunked": serve(chunked, headers=("Transfer-Encoding: chunked",), length=False),
        "/to-eof": serve(body, length=False),
        "/moved": serve(b"", status="301 Moved Permanently", headers=("Location: /der",)),
    }
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path)
    for path, route in routes.items():
        assert fetcher.fetch(issuers.route(path, route)) == (cert,), path
    assert issuers.requests == [*routes, "/der"]


def test_fetch_limits_and_cache(pki: PKI, issuers: IssuerServer) -> None:
    body = der(pki.intermediate)
    loop = issuers.route("/loop", serve(b"", status="302 Found", headers=("Location: /loop",)))
    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path, max_bytes=len(body) - 1, cache_size=2)
    with pytest.raises(FetchError, match="redirects"):
        fetcher.fetch(loop)
    assert issuers.requests == ["/loop"] * 4
    too_big = issuers.route("/big", serve(body))
    with pytest.raises(FetchError, match="max_bytes"):
        fetcher.fetch(too_big)
    with pytest.raises(FetchError, match="max_bytes"):  # a failure is remembered for a while
        fetcher.fetch(too_big)
    assert issuers.requests.count("/big") == 1
    with pytest.raises(FetchError, match="only http://"):
        fetcher.fetch("https://127.0.0.1/x.der")

    fetcher = pausetls.AIAFetcher(cafile=pki.ca_path, cache_size=1)
    a, b = issuers.route("/a", serve(body)), issuers.route("/b", serve(body))
    for url in (a, a, b, a):  # one entry: b evicts a
        fetcher.fetch(url)
    assert [r for r in issuers.requests if r in ("/a", "/b")] == ["/a", "/b", "/a"]
