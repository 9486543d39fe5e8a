"""Pausable handshake hooks against real peers on loopback.

SNI, client hello, certificate selection, OCSP stapling (both sides), ALPN
and verification: each callback pauses on gevent or hands back a pending
result another greenlet completes; each failure reaches the client as the
alert it should, and the server's stats and one log line say why.  Clients
are CPython's ``ssl`` (cooperative through ``gevent.ssl``), ``openssl
s_client`` and pausetls itself.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import pytest
from cryptography.x509 import ocsp
from OpenSSL import crypto

import pausetls
from pausetls.helpers.ondemand import DirectoryLoader, normalize_server_name

from conftest import make_server_context, stdlib_client_context, wait_until
from drivers import after_pause, later, never
from gates import GENEROUS, Gate
from hook_clients import ThreadAnsweredSNI, client_error, fetch_cn, ocsp_response, s_client
from peers import PeerGroup
from pki import PKI, Issued
from reliability import mutual_context

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)

S_FLAG = {pausetls.TLS1_2_VERSION: "-tls1_2", pausetls.TLS1_3_VERSION: "-tls1_3"}
SITES = 100


# -- fixtures and helpers ------------------------------------------------------


@pytest.fixture(scope="module")
def sites(pki: PKI) -> dict[str, Issued]:
    """A certificate (leaf + intermediate) for each of 100 host names."""
    names = [f"site{i}.example" for i in range(SITES)]
    return {name: pki.issue(name, names=(name,)) for name in names}


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The server's "handshake failed" lines so far."""
    caplog.set_level(logging.INFO, "pausetls.server")
    return lambda: [r.getMessage() for r in caplog.records if "handshake failed" in r.getMessage()]


def pem_pair(issued: Issued) -> tuple[bytes, bytes]:
    return issued.chain_path.read_bytes(), issued.key_path.read_bytes()


def run_all(fns: list[Callable[[], Any]], timeout: float = 2 * GENEROUS) -> list[Any]:
    greenlets = [gevent.spawn(fn) for fn in fns]
    gevent.joinall(greenlets, timeout=timeout)
    return [g.value if g.successful() else g.exception for g in greenlets]


def on_demand_context() -> pausetls.Context:
    """A server context with no certificate of its own: every certificate is loaded per name."""
    return pausetls.Context(pausetls.TLS_SERVER_METHOD)


# -- on-demand certificates: 100 names at once -----------------------------------


@pytest.mark.parametrize("hook", ["servername", "certificate"])
def test_100_sni_names_each_get_their_own_certificate_loaded_with_a_pause(
    hook: str, pki: PKI, sites: dict[str, Issued], start_server: Any, tls_version: int
) -> None:
    gate = Gate(SITES)  # "fetch it from the vault": every load waits until all of them are waiting at once

    def loader(name: str) -> tuple[bytes, bytes] | None:
        gate.arrive()
        return pem_pair(sites[name]) if name in sites else None

    certs = pausetls.OnDemandCertificates(loader)
    ctx = on_demand_context()
    if hook == "servername":
        certs.install(ctx)
    else:
        ctx.set_certificate_callback(certs.certificate_callback)
    server = start_server(ctx)
    client_ctx = stdlib_client_context(pki, version=tls_version, cooperative=True)
    results = run_all([lambda name=name: fetch_cn(server.server_port, client_ctx, name) for name in sites])
    assert gate.opened, gate.why()
    assert results == list(sites)  # every client saw the certificate for its own name
    assert certs.stats.loads == SITES and len(certs) == SITES
    # a second round comes from the cache
    assert fetch_cn(server.server_port, client_ctx, "site7.example") == "site7.example"
    assert certs.stats.loads == SITES and certs.stats.hits == 1


def test_concurrent_first_requests_for_one_name_share_one_load(
    pki: PKI, sites: dict[str, Issued], start_server: Any
) -> None:
    calls: list[str] = []

    def loader(name: str) -> tuple[bytes, bytes] | None:
        calls.append(name)
        gevent.sleep(0.2)
        return pem_pair(sites[name])

    certs = pausetls.OnDemandCertificates(loader)
    ctx = on_demand_context()
    certs.install(ctx)
    server = start_server(ctx)
    client_ctx = stdlib_client_context(pki, cooperative=True)
    results = run_all([lambda: fetch_cn(server.server_port, client_ctx, "site1.example")] * 20)
    assert results == ["site1.example"] * 20
    assert calls == ["site1.example"]
    assert certs.stats.loads == 1 and certs.stats.waits == 19


def test_unknown_and_invalid_names_are_refused_with_unrecognized_name(
    pki: PKI, sites: dict[str, Issued], start_server: Any, openssl: str, peers: PeerGroup
) -> None:
    asked: list[str] = []

    def loader(name: str) -> tuple[bytes, bytes] | None:
        asked.append(name)
        return pem_pair(sites[name]) if name in sites else None

    certs = pausetls.OnDemandCertificates(loader)
    ctx = on_demand_context()
    certs.install(ctx)
    server = start_server(ctx)
    client_ctx = stdlib_client_context(pki, cooperative=True)
    error = client_error(server.server_port, client_ctx, "nowhere.example")
    assert "unrecognized name" in str(error), error
    client_error(server.server_port, client_ctx, "nowhere.example")  # a remembered miss
    assert asked == ["nowhere.example"]
    invalid = ["../../etc/passwd", "a/b.example", "_wildcard.example", "x..example"]
    for args in [["-servername", name] for name in invalid] + [["-noservername"]]:
        code, output = s_client(openssl, peers, server.server_port, *args)
        assert code != 0 and "unrecognized name" in output, output
    assert asked == ["nowhere.example"]  # the loader never saw an invalid name
    # names are case-insensitive: the loader sees them lowercased
    assert fetch_cn(server.server_port, client_ctx, "SITE3.Example") == "site3.example"
    assert asked[-1] == "site3.example"


def test_default_true_falls_back_to_the_context_certificate_and_replaces_its_chain(
    pki: PKI, sites: dict[str, Issued], server_cert: Issued, start_server: Any
) -> None:
    certs = pausetls.OnDemandCertificates(lambda name: pem_pair(sites[name]) if name in sites else None, default=True)
    ctx = make_server_context(server_cert)
    certs.install(ctx)
    server = start_server(ctx)
    client_ctx = stdlib_client_context(pki, cooperative=True)
    assert fetch_cn(server.server_port, client_ctx, "localhost") == "localhost"  # unknown: the default
    assert fetch_cn(server.server_port, client_ctx, "site5.example") == "site5.example"
    # the loaded chain replaced the context's (leaf + its intermediate), not appended to it
    with pausetls.connect(
        ("127.0.0.1", server.server_port), pausetls.client_context(str(pki.ca_path)), server_hostname="site5.example"
    ) as tls:
        chain = tls.get_peer_cert_chain()
        assert chain is not None
        subjects = [c.to_cryptography().subject.rfc4514_string() for c in chain]
        assert len(subjects) == 2 and "site5.example" in subjects[0], subjects


def test_directory_loader_with_wildcard_fallback(
    tmp_path: Path, pki: PKI, sites: dict[str, Issued], start_server: Any
) -> None:
    wildcard = pki.issue("*.wild.example", names=("*.wild.example",))
    for stem, issued in [("site9.example", sites["site9.example"]), ("_wildcard.wild.example", wildcard)]:
        (tmp_path / f"{stem}.pem").write_bytes(issued.chain_path.read_bytes())
        (tmp_path / f"{stem}.key").write_bytes(issued.key_path.read_bytes())
    certs = pausetls.OnDemandCertificates(tmp_path)
    ctx = on_demand_context()
    certs.install(ctx)
    server = start_server(ctx)
    client_ctx = stdlib_client_context(pki, cooperative=True)
    assert fetch_cn(server.server_port, client_ctx, "site9.example") == "site9.example"
    assert fetch_cn(server.server_port, client_ctx, "a.wild.example") == "*.wild.example"
    assert fetch_cn(server.server_port, client_ctx, "b.wild.example") == "*.wild.example"
    assert "unrecognized name" in str(client_error(server.server_port, client_ctx, "site8.example"))


def test_name_validation_and_the_directory_loader_stay_inside_their_directory(tmp_path: Path) -> None:
    assert normalize_server_name("Site1.Example.") == "site1.example"
    assert normalize_server_name(b"xn--bcher-kva.example") == "xn--bcher-kva.example"
    for bad in [None, "", "..", "../x", "a/b", "a\\b", "_wildcard.x", "a..b", ".a", "a b", "é.example", b"\xff"]:
        assert normalize_server_name(bad) is None, bad
    assert normalize_server_name("a" * 64 + ".example") is None
    (tmp_path / "secret.pem").write_bytes(b"x")
    (tmp_path / "sites").mkdir()
    loader = DirectoryLoader(tmp_path / "sites")
    assert loader("../secret") is None and loader("Secret") is None and loader("secret") is None
    with pytest.raises(ValueError):
        DirectoryLoader(tmp_path / "missing")


def test_cache_bounds_ttl_misses_and_failures(sites: dict[str, Issued]) -> None:
    now = [0.0]
    calls: list[str] = []
    fail = {"broken.example"}

    def loader(name: str) -> tuple[bytes, bytes] | None:
        calls.append(name)
        if name in fail:
            raise OSError("vault unreachable")
        return pem_pair(sites[name]) if name in sites else None

    certs = pausetls.OnDemandCertificates(loader, max_entries=2, ttl=100, miss_ttl=10, clock=lambda: now[0])
    for name in ["site0.example", "site1.example", "site2.example", "site0.example"]:
        found = certs.get(name)
        assert found is not None and found.name == name
    assert calls == ["site0.example", "site1.example", "site2.example", "site0.example"]  # site0 was evicted
    assert certs.get("site0.example") is not None and len(calls) == 4  # now cached
    now[0] = 101
    assert certs.get("site0.example") is not None and len(calls) == 5  # expired, reloaded
    assert certs.get("nowhere.example") is None and certs.get("nowhere.example") is None
    assert calls.count("nowhere.example") == 1
    now[0] = 112
    assert certs.get("nowhere.example") is None and calls.count("nowhere.example") == 2
    for _ in range(2):  # a failure is raised to the waiters and not cached
        with pytest.raises(OSError, match="vault unreachable"):
            certs.get("broken.example")
    assert calls.count("broken.example") == 2 and certs.stats.failures == 2
    certs.forget("site0.example")
    assert certs.get("site0.example") is not None and calls[-1] == "site0.example" and len(calls) == 10


def test_a_loader_returning_a_mismatched_key_fails_the_load(sites: dict[str, Issued]) -> None:
    certs = pausetls.OnDemandCertificates(
        lambda name: (sites["site0.example"].chain_path.read_bytes(), sites["site1.example"].key_path.read_bytes())
    )
    with pytest.raises(pausetls.Error, match="does not match"):
        certs.get("site0.example")


def test_sni_callback_switching_context_serves_the_other_certificate(
    pki: PKI, sites: dict[str, Issued], server_cert: Issued, driver: str, start: Any
) -> None:
    other = make_server_context(sites["site42.example"])

    def switch(conn: pausetls.TLSSocket) -> None:
        if conn.get_servername() == b"site42.example":
            conn.set_context(other)

    ctx = make_server_context(server_cert)
    ctx.set_tlsext_servername_callback(lambda conn: after_pause(driver, lambda: switch(conn)))  # switched after it
    server = start(ctx)
    client_ctx = stdlib_client_context(pki, cooperative=True)
    assert fetch_cn(server.server_port, client_ctx, "site42.example") == "site42.example"
    assert fetch_cn(server.server_port, client_ctx, "localhost") == "localhost"


# -- OCSP stapling -----------------------------------------------------------------


def stapling_context(server_cert: Issued, version: int, staple: bytes, driver: str) -> pausetls.Context:
    ctx = make_server_context(server_cert, version)
    ctx.set_ocsp_server_callback(lambda conn, data: after_pause(driver, lambda: staple, 0.1))  # "ask the responder"
    return ctx


def ocsp_client(port: int, ctx: pausetls.Context) -> pausetls.TLSSocket:
    """A pausetls client: its context's OCSP callback makes it ask for a staple."""
    return pausetls.connect(("127.0.0.1", port), ctx, server_hostname="localhost", timeout=10)


def test_a_pausing_server_callback_staples_what_s_client_sees(
    pki: PKI, server_cert: Issued, driver: str, start: Any, tls_version: int, openssl: str, peers: PeerGroup
) -> None:
    server = start(stapling_context(server_cert, tls_version, ocsp_response(pki, server_cert), driver))
    code, output = s_client(
        openssl, peers, server.server_port, "-servername", "localhost", "-CAfile", str(pki.ca_path),
        "-verify_return_error", "-status", S_FLAG[tls_version],
    )  # fmt: skip
    assert code == 0, output
    assert "OCSP Response Status: successful" in output, output
    assert "Cert Status: good" in output, output


def test_the_pausetls_client_callback_sees_the_stapled_bytes(
    pki: PKI, server_cert: Issued, driver: str, start: Any, tls_version: int
) -> None:
    staple = ocsp_response(pki, server_cert)
    server = start(stapling_context(server_cert, tls_version, staple, driver))
    seen: list[tuple[bytes, Any]] = []

    def check(conn: pausetls.TLSSocket, stapled: bytes, data: Any) -> bool:
        gevent.sleep(0.05)  # a client may check the response against its own policy service
        seen.append((stapled, data))
        response = ocsp.load_der_ocsp_response(stapled)
        return response.certificate_status == ocsp.OCSPCertStatus.GOOD

    ctx = pausetls.client_context(str(pki.ca_path))
    ctx.set_min_proto_version(tls_version)
    ctx.set_max_proto_version(tls_version)
    ctx.set_ocsp_client_callback(check, data="policy")
    with ocsp_client(server.server_port, ctx) as tls:
        tls.sendall(b"ping")
        assert tls.recv(100) == b"ping"
    assert seen == [(staple, "policy")]


def test_a_client_callback_returning_false_fails_the_handshake(
    pki: PKI, server_cert: Issued, driver: str, start: Any, tls_version: int, server_log: Callable[[], list[str]]
) -> None:
    server = start(stapling_context(server_cert, tls_version, ocsp_response(pki, server_cert), driver))
    ctx = pausetls.client_context(str(pki.ca_path))
    ctx.set_min_proto_version(tls_version)
    ctx.set_max_proto_version(tls_version)
    ctx.set_ocsp_client_callback(lambda conn, stapled, data: False)
    with pytest.raises(pausetls.HandshakeError, match="invalid status response"):
        ocsp_client(server.server_port, ctx)
    assert wait_until(lambda: server.stats.handshakes_failed == 1)
    assert "bad certificate status response" in server_log()[0], server_log()


def test_a_server_callback_returning_nothing_staples_nothing(
    pki: PKI, server_cert: Issued, driver: str, start: Any, openssl: str, peers: PeerGroup
) -> None:
    server = start(stapling_context(server_cert, pausetls.TLS1_3_VERSION, b"", driver))
    code, output = s_client(openssl, peers, server.server_port, "-servername", "localhost", "-status")
    assert code == 0, output
    assert "OCSP response: no response sent" in output, output
    seen: list[bytes] = []
    ctx = pausetls.client_context(str(pki.ca_path))
    ctx.set_ocsp_client_callback(lambda conn, stapled, data: seen.append(stapled) is None)
    ocsp_client(server.server_port, ctx).close()
    assert seen == [b""]


def test_a_server_callback_that_raises_fails_the_handshake_with_internal_error(
    pki: PKI, server_cert: Issued, driver: str, start: Any, server_log: Callable[[], list[str]]
) -> None:
    ctx = make_server_context(server_cert)
    ctx.set_ocsp_server_callback(lambda conn, data: _raise_value_error(driver))
    server = start(ctx)
    client = pausetls.client_context(str(pki.ca_path))
    client.set_ocsp_client_callback(lambda conn, der, data: True)
    with pytest.raises(pausetls.HandshakeError, match="alert internal error"):
        ocsp_client(server.server_port, client)
    assert wait_until(lambda: server.stats.callback_errors == 1)
    [line] = server_log()
    assert "ocsp_server callback raised ValueError: certificate store unreachable" in line, line


# -- resume from elsewhere -------------------------------------------------------


def completed_later(driver: str, value: Any, delay: float | None) -> Any:
    """A pending result that something else completes after *delay* seconds (never, with None)."""
    return never(driver) if delay is None else later(driver, value, delay=delay)


def pending_hook_context(
    pki: PKI, server_cert: Issued, hook: str, driver: str, delay: float | None
) -> pausetls.Context:
    """The verify (leaf) or SNI callback hands back a result completed *delay* seconds later."""
    if hook == "verify":

        def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> Any:
            return completed_later(driver, bool(ok), delay) if depth == 0 else bool(ok)

        return mutual_context(pki, server_cert, None, verify)
    ctx = make_server_context(server_cert)
    ctx.set_tlsext_servername_callback(lambda conn: completed_later(driver, True, delay))
    return ctx


@pytest.mark.parametrize("hook", ["verify", "servername"])
def test_a_pending_result_completed_later_elsewhere_resumes_the_handshake(
    hook: str, pki: PKI, server_cert: Issued, client_cert: Issued, driver: str, start: Any
) -> None:
    """Completed by another greenlet (gevent), a timer thread (threads), the event loop (asyncio)."""
    server = start(pending_hook_context(pki, server_cert, hook, driver, 0.3))
    client_ctx = stdlib_client_context(pki, client_cert, cooperative=True)
    started = time.monotonic()
    assert fetch_cn(server.server_port, client_ctx, "localhost") == "localhost"
    assert time.monotonic() - started >= 0.25  # not before it was completed (gevent's clock may lag a little)
    assert server.stats.handshakes_completed == 1


def test_a_concurrent_future_completed_by_a_thread_pauses_the_handshake_without_blocking_the_hub(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any
) -> None:
    """An SNI callback hands back an executor's future: the handshake waits for the thread, gevent goes on."""
    with ThreadPoolExecutor(1) as pool:
        servername = ThreadAnsweredSNI(pool)
        ctx = make_server_context(server_cert)
        ctx.set_tlsext_servername_callback(servername)
        server = start_server(ctx)
        client = gevent.spawn(
            fetch_cn, server.server_port, stdlib_client_context(pki, client_cert, cooperative=True), "localhost"
        )
        assert wait_until(servername.asked.is_set)
        assert not client.ready()  # the thread has not answered: the handshake is paused
        # this greenlet runs while the handshake waits: waiting on the future did not block the hub
        servername.release.set()
        assert client.get(timeout=GENEROUS) == "localhost"
    assert server.stats.handshakes_completed == 1


@pytest.mark.parametrize("driver", ["gevent", "asyncio"])  # a thread's handshake deadline cannot cut a wait
@pytest.mark.parametrize(
    ("hook", "alert"),
    # OpenSSL answers a failed verification (X509_V_ERR_APPLICATION_VERIFICATION) with handshake_failure
    [("verify", "alert handshake failure"), ("servername", "alert internal error")],
)
def test_a_pending_result_never_completed_fails_at_the_handshake_timeout(
    hook: str, alert: str, pki: PKI, server_cert: Issued, client_cert: Issued, driver: str, start: Any,
    server_log: Any,
) -> None:  # fmt: skip
    server = start(pending_hook_context(pki, server_cert, hook, driver, None), handshake_timeout=0.5)
    client_ctx = stdlib_client_context(pki, client_cert, cooperative=True)
    started = time.monotonic()
    error = client_error(server.server_port, client_ctx)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < GENEROUS, elapsed  # at the handshake timeout, not before and not never
    assert alert in str(error), error
    assert wait_until(lambda: server.stats.handshakes_timed_out == 1)
    assert server.stats.handshakes_completed == 0
    assert server_log() == [server_log()[0]] and "handshake timed out" in server_log()[0]


# -- client hello ------------------------------------------------------------------


def test_the_client_hello_callback_sees_what_s_client_offered(
    server_cert: Issued, driver: str, start: Any, openssl: str, peers: PeerGroup
) -> None:
    hellos: list[pausetls.ClientHello] = []

    def hello(conn: pausetls.TLSSocket, offered: pausetls.ClientHello) -> Any:
        return after_pause(driver, lambda: hellos.append(offered) is None)

    ctx = make_server_context(server_cert)
    ctx.set_client_hello_callback(hello)
    server = start(ctx)
    code, output = s_client(openssl, peers, server.server_port, "-servername", "x.example", "-alpn", "h2,http/1.1")
    assert code == 0, output
    [offered] = hellos
    assert offered.server_name == "x.example"
    assert offered.alpn_protocols == [b"h2", b"http/1.1"]
    assert 0x0304 in offered.versions and 0x0303 in offered.versions
    assert "TLS_AES_256_GCM_SHA384" in offered.cipher_suites
    assert offered.legacy_version == 0x0303
    assert 0 in offered.extensions and 16 in offered.extensions  # server_name, ALPN


@pytest.mark.parametrize(
    ("reject", "alert", "logged"),
    [
        (lambda: False, "alert handshake failure", "handshake_failure: the client_hello callback returned False"),
        (
            lambda: pausetls.Alert(pausetls.ALERT_ACCESS_DENIED, "not on the list"),
            "alert access denied",
            "access_denied: not on the list",
        ),
    ],
    ids=["return-False", "raise-Alert"],
)
def test_the_client_hello_callback_rejects_with_an_alert(
    reject: Callable[[], Any],
    alert: str,
    logged: str,
    server_cert: Issued,
    driver: str,
    start: Any,
    openssl: str,
    peers: PeerGroup,
    server_log: Callable[[], list[str]],
) -> None:
    def verdict() -> bool:
        answer = reject()
        if isinstance(answer, pausetls.Alert):
            raise answer
        return bool(answer)

    ctx = make_server_context(server_cert)
    ctx.set_client_hello_callback(lambda conn, offered: after_pause(driver, verdict))
    server = start(ctx)
    code, output = s_client(openssl, peers, server.server_port, "-servername", "x.example")
    assert code != 0 and alert in output, output
    assert wait_until(lambda: server.stats.handshakes_failed == 1)
    [line] = server_log()
    assert logged in line, line


# -- each hook's failure as the client sees it --------------------------------------


def _raise_value_error(driver: str) -> Any:
    def fail() -> None:
        raise ValueError("certificate store unreachable")

    return after_pause(driver, fail)


def _slow_servername_with_a_timeout(ctx: pausetls.Context, driver: str) -> None:
    ctx.set_callback_timeout(0.2)
    ctx.set_tlsext_servername_callback(lambda conn: never(driver))


ALERT_CASES: dict[str, tuple[Callable[[pausetls.Context, str], None], str, str, str]] = {
    # hook setup (for a driver), what the stdlib client's error says, the server counter, the server log line
    "sni-false": (
        lambda ctx, driver: ctx.set_tlsext_servername_callback(lambda conn: after_pause(driver, lambda: False)),
        "tlsv1 unrecognized name",
        "handshakes_failed",
        "unrecognized_name: the servername callback returned False",
    ),
    "sni-raises": (
        lambda ctx, driver: ctx.set_tlsext_servername_callback(lambda conn: _raise_value_error(driver)),
        "tlsv1 alert internal error",
        "callback_errors",
        "servername callback raised ValueError: certificate store unreachable",
    ),
    "alpn-not-offered": (
        lambda ctx, driver: ctx.set_alpn_select_callback(lambda conn, offered: after_pause(driver, lambda: b"h2")),
        "tlsv1 alert no application protocol",
        "handshakes_failed",
        "no application protocol",
    ),
    "certificate-false": (
        lambda ctx, driver: ctx.set_certificate_callback(lambda conn: after_pause(driver, lambda: False)),
        "tlsv1 alert internal error",
        "handshakes_failed",
        "internal_error: the certificate callback returned False",
    ),
    "callback-timeout": (
        _slow_servername_with_a_timeout,
        "tlsv1 alert internal error",
        "callback_errors",
        # gevent and asyncio cut the callback; under threads its wait for the result times out
        r"servername callback raised TimeoutError: (pause )?timed out after 0.2 s",
    ),
}


@pytest.mark.parametrize("case", list(ALERT_CASES))
def test_each_hook_failure_reaches_the_client_as_its_alert(
    case: str, pki: PKI, server_cert: Issued, driver: str, start: Any, server_log: Callable[[], list[str]]
) -> None:
    setup, client_sees, counter, logged = ALERT_CASES[case]
    ctx = make_server_context(server_cert)
    setup(ctx, driver)
    server = start(ctx)
    client_ctx = stdlib_client_context(pki, cooperative=True)
    client_ctx.set_alpn_protocols(["http/1.1"])
    started = time.monotonic()
    error = client_error(server.server_port, client_ctx)
    elapsed = time.monotonic() - started
    assert client_sees in str(error), error
    assert (0.15 <= elapsed < GENEROUS) if case == "callback-timeout" else elapsed < GENEROUS, elapsed
    assert wait_until(lambda: getattr(server.stats, counter) == 1)
    assert server.stats.handshakes_failed == 1 and server.stats.handshakes_completed == 0
    [line] = server_log()
    assert re.search(logged, line), line


def test_a_verify_callback_refusing_a_good_client_certificate(
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    driver: str,
    start: Any,
    tls_version: int,
    server_log: Callable[[], list[str]],
) -> None:
    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> Any:
        return after_pause(driver, lambda: depth > 0)  # the chain is fine; the leaf is refused by policy

    server = start(mutual_context(pki, server_cert, None, verify))
    client_ctx = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    error = client_error(server.server_port, client_ctx)
    # OpenSSL answers X509_V_ERR_APPLICATION_VERIFICATION with handshake_failure
    assert "SSLV3_ALERT_HANDSHAKE_FAILURE" in str(error), error
    assert wait_until(lambda: server.stats.verification_failures == 1)
    [line] = server_log()
    assert "application verification failure" in line, line


def test_the_timeout_covers_a_verify_callback_too(
    pki: PKI, server_cert: Issued, client_cert: Issued, driver: str, start: Any, server_log: Callable[[], list[str]]
) -> None:
    def verify(conn: pausetls.TLSSocket, x509: crypto.X509, errnum: int, depth: int, ok: int) -> Any:
        return never(driver)  # a timed-out verification must not accept

    ctx = mutual_context(pki, server_cert, None, verify)
    ctx.set_callback_timeout(0.2)
    server = start(ctx)
    started = time.monotonic()
    error = client_error(server.server_port, stdlib_client_context(pki, client_cert, cooperative=True))
    assert 0.15 <= time.monotonic() - started < GENEROUS  # at the callback timeout, not at the sleep's end
    assert "alert handshake failure" in str(error), error
    assert wait_until(lambda: server.stats.callback_errors == 1)
    [line] = server_log()
    assert "verify callback raised TimeoutError" in line, line
