"""Sessions resume only where a full handshake would let the same client in, for the same server name.

Each attack is made from the client's side with a real client (CPython's
``ssl``) holding a certificate from CA-A (``pki``) and a session it earned
legitimately; the server it then resumes at requires CA-B (``other_pki``), or
the client asks for another virtual host.  Each attack test also shows the
legitimate resumption still works, so the fix is not "never resume".
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pausetls
from pausetls.sealing import SessionSealer
from pausetls.stores import MemoryStore, SessionStore, store_from_url

from conftest import echo_handler, make_server_context, stdlib_client_context, wait_until
from peers import PeerGroup
from pki import PKI, Issued
from reliability import MUTUAL, client_cert_args, connect_once, mutual_context, s_client_echo
from served import Served, fetch_page, killed_at_end, resumed_within, serve, session_key_file

CACHES = ["openssl", "store", "tickets"]  # OpenSSL's own cache and tickets, pausetls' session cache, or its ticket keys
FLEET_TICKET_KEYS = pausetls.TicketKeys.generate()  # one ring, as every server of a fleet would share


class Handled:
    """A handler that records (context, server name, resumed) of each connection, then echoes one message."""

    def __init__(self) -> None:
        self.seen: list[tuple[pausetls.Context, bytes | None, bool]] = []

    def __call__(self, tls: pausetls.TLSSocket, address: Any) -> None:
        self.seen.append((tls.get_context(), tls.get_servername(), tls.session_reused))
        tls.sendall(tls.recv(10))


class PolicyChange:
    """An SNI callback on *front* that moves every connection to *strict* once `now` is called: the
    client policy changing after sessions were made under the old one."""

    def __init__(self, front: pausetls.Context, strict: pausetls.Context) -> None:
        self.strict = strict
        self.happened = False
        front.set_tlsext_servername_callback(self._pick)

    def now(self) -> None:
        self.happened = True

    def _pick(self, conn: pausetls.TLSSocket) -> None:
        if self.happened:
            conn.set_context(self.strict)


def resumes(port: int, client: ssl.SSLContext, session: Any, name: str = "localhost") -> bool:
    """The session resumes (waiting for the server's deferred store write to land)."""
    return wait_until(lambda: connect_once(port, client, session, name)[1:] == (True, b"x"))


def with_cache(ctx: pausetls.Context, cache: str, store: SessionStore | None = None) -> pausetls.Context:
    if cache == "store":
        ctx.set_session_cache(store or MemoryStore())
    elif cache == "tickets":
        ctx.set_ticket_keys(FLEET_TICKET_KEYS)
    return ctx


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return session_key_file(tmp_path)


@pytest.fixture
def vhost_cert(pki: PKI) -> Issued:
    return pki.issue("vhosts", names=("a.test", "b.test", "localhost"))


# -- an SNI callback switching contexts ------------------------------------------------------


@pytest.mark.parametrize("cache", CACHES)
def test_sni_switch_to_a_context_with_other_client_cas_refuses_the_resumption(
    cache: str,
    pki: PKI,
    other_pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    tls_version: int,
) -> None:
    """Same verify mode, different client CAs: a session earned under CA-A does not resume where the SNI
    callback now picks the CA-B context (a policy change after the session was made)."""
    front = with_cache(mutual_context(pki, server_cert, tls_version, None), cache)
    change = PolicyChange(front, mutual_context(other_pki, server_cert, tls_version, None))
    handled = Handled()
    server = start_server(front, handled)
    client = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    session, reused, answer = connect_once(server.server_port, client)
    assert (reused, answer) == (False, b"x")
    assert resumes(server.server_port, client, session)  # legitimate: same policy, same name

    change.now()
    _, reused, answer = connect_once(server.server_port, client, session)
    assert answer == b"", "a CA-A session resumed where CA-B is required"
    assert all(context is front for context, _, _ in handled.seen)
    assert wait_until(lambda: server.stats.handshakes_failed == 1)


@pytest.mark.parametrize("cache", CACHES)
def test_a_resumed_peer_is_verified_against_the_trust_store_in_force(
    cache: str,
    pki: PKI,
    other_pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    tls_version: int,
) -> None:
    """Even with one session id context chosen for both, the resumed certificate is checked against the
    CA-B store, and the verify callback sees OpenSSL's real verdict (not ok=1)."""
    calls: list[tuple[int, int, int]] = []

    def verify(conn: pausetls.TLSSocket, x509: Any, errnum: int, depth: int, ok: int) -> bool:
        calls.append((errnum, depth, ok))
        return bool(ok)

    front = with_cache(mutual_context(pki, server_cert, tls_version, None), cache)
    strict = mutual_context(other_pki, server_cert, tls_version, verify)
    for ctx in (front, strict):
        ctx.set_session_id(b"one id for both")
    change = PolicyChange(front, strict)
    handled = Handled()
    server = start_server(front, handled)
    client = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    session, _, _ = connect_once(server.server_port, client)
    assert resumes(server.server_port, client, session)

    change.now()
    _, _, answer = connect_once(server.server_port, client, session)
    assert answer == b""
    assert all(context is front for context, _, _ in handled.seen)
    assert calls and calls[0][2] == 0 and calls[0][0] != 0, calls  # the real verdict: rejected by OpenSSL
    assert wait_until(lambda: server.stats.verification_failures == 1)


def test_sni_switch_to_a_context_that_requires_client_certificates_asks_for_one(
    pki: PKI,
    other_pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    untrusted_client_cert: Issued,
    start_server: Any,
    tls_version: int,
) -> None:
    """A virtual host that requires client certificates, behind a default context that does not: the
    client asking for it must present one its CAs issued (set_context brings the verify mode along)."""
    front = make_server_context(server_cert, tls_version)
    secure = mutual_context(pki, server_cert, tls_version, None)
    front.set_tlsext_servername_callback(
        lambda conn: conn.set_context(secure) if conn.get_servername() == b"secure.test" else None
    )
    handled = Handled()
    server = start_server(front, handled)
    anonymous = stdlib_client_context(pki, version=tls_version, cooperative=True)
    anonymous.check_hostname = False  # the certificate is for localhost; the name only picks the context
    with_cert = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    with_cert.check_hostname = False
    wrong_ca = stdlib_client_context(pki, untrusted_client_cert, tls_version, cooperative=True)
    wrong_ca.check_hostname = False
    assert connect_once(server.server_port, anonymous, None, "public.test")[2] == b"x"  # the default context
    assert connect_once(server.server_port, anonymous, None, "secure.test")[2] == b"", "let in with no certificate"
    assert connect_once(server.server_port, wrong_ca, None, "secure.test")[2] == b"", "let in by another CA"
    assert connect_once(server.server_port, with_cert, None, "secure.test")[2] == b"x"
    assert [(context is secure, name) for context, name, _ in handled.seen] == [
        (False, b"public.test"),
        (True, b"secure.test"),
    ]
    assert wait_until(lambda: server.stats.handshakes_failed + server.stats.verification_failures >= 2)


@pytest.mark.parametrize("cache", CACHES)
def test_sni_switch_to_a_context_with_the_same_policy_still_resumes(
    cache: str,
    pki: PKI,
    server_cert: Issued,
    vhost_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    tls_version: int,
) -> None:
    """Another certificate, the same client CAs and verify mode: sessions made there resume there."""
    front = with_cache(mutual_context(pki, server_cert, tls_version, None), cache)
    vhost = mutual_context(pki, vhost_cert, tls_version, None)
    front.set_tlsext_servername_callback(lambda conn: conn.set_context(vhost) if conn.get_servername() else None)
    handled = Handled()
    server = start_server(front, handled)
    client = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    session, reused, answer = connect_once(server.server_port, client, None, "b.test")
    assert (reused, answer) == (False, b"x")
    assert resumes(server.server_port, client, session, "b.test")
    assert handled.seen[-1] == (vhost, b"b.test", True)


def _s_client(
    peers: PeerGroup, openssl: str, pki: PKI, client: Issued, port: int, version: int, *session: str
) -> bytes:
    """``openssl s_client`` presenting *client* for localhost, one connection (``-sess_out``/``-sess_in``)."""
    return s_client_echo(
        peers, openssl, pki, port, version, "-servername", "localhost", *session, *client_cert_args(client, pki)
    )


def test_s_client_resuming_a_ca_a_session_where_sni_now_requires_ca_b_is_refused(
    tmp_path: Path,
    openssl: str,
    peers: PeerGroup,
    pki: PKI,
    other_pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    tls_version: int,
) -> None:
    front = mutual_context(pki, server_cert, tls_version, None)
    change = PolicyChange(front, mutual_context(other_pki, server_cert, tls_version, None))
    port = start_server(front, echo_handler).server_port
    saved = str(tmp_path / "session.pem")
    first = _s_client(peers, openssl, pki, client_cert, port, tls_version, "-sess_out", saved)
    assert b"\nNew, " in first and b"ping\n" in first
    again = _s_client(peers, openssl, pki, client_cert, port, tls_version, "-sess_in", saved)
    assert b"\nReused, " in again and b"ping\n" in again  # legitimate: same policy

    change.now()
    attack = _s_client(peers, openssl, pki, client_cert, port, tls_version, "-sess_in", saved)
    assert b"\nReused, " not in attack and b"ping\n" not in attack, attack.decode(errors="replace")


# -- two servers sharing one store -------------------------------------------------------------


@pytest.fixture(params=["memory", "memcached", "redis"])
def shared_store(request: pytest.FixtureRequest) -> SessionStore:
    if request.param == "memory":
        return MemoryStore()
    return store_from_url(request.getfixturevalue(f"{request.param}_server").url)


def test_servers_sharing_a_store_with_other_client_cas_do_not_share_sessions(
    shared_store: SessionStore,
    pki: PKI,
    other_pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    start_server: Any,
    tls_version: int,
) -> None:
    sealer = SessionSealer.generate()
    servers = []
    for ca in (pki, other_pki):
        ctx = mutual_context(ca, server_cert, tls_version, None)
        ctx.set_session_cache(shared_store, sealer=sealer)
        servers.append(start_server(ctx))
    a, b = servers
    client = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    session, _, _ = connect_once(a.server_port, client)
    assert resumes(a.server_port, client, session)
    _, reused, answer = connect_once(b.server_port, client, session)
    assert (reused, answer) == (False, b""), "a CA-A session resumed on the CA-B server"
    assert b.context.session_cache.stats.hits == 0


def test_servers_with_the_same_policy_share_sessions_unless_bound_to_their_context(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any, tls_version: int
) -> None:
    store, sealer = MemoryStore(), SessionSealer.generate()
    contexts = [mutual_context(pki, server_cert, tls_version, None) for _ in range(3)]
    for ctx in contexts:
        ctx.set_session_cache(store, sealer=sealer)
    contexts[2].bind_sessions_to_context()
    a, b, bound = (start_server(ctx) for ctx in contexts)
    client = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    session, _, _ = connect_once(a.server_port, client)
    assert resumes(b.server_port, client, session)  # same policy: deliberately shared
    _, reused, answer = connect_once(bound.server_port, client, session)
    assert (reused, answer) == (False, b"x")


def test_the_default_session_id_context_follows_the_client_policy(pki: PKI, other_pki: PKI) -> None:
    ids = []
    ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    ids.append(ctx.get_session_id())
    ctx.set_verify(MUTUAL)
    ids.append(ctx.get_session_id())
    ctx.load_verify_locations(pki.ca_path)
    ids.append(ctx.get_session_id())
    ctx.load_verify_locations(other_pki.ca_path)
    ids.append(ctx.get_session_id())
    ctx.set_verify_depth(3)
    ids.append(ctx.get_session_id())
    ctx.bind_sessions_to_context()
    ids.append(ctx.get_session_id())
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)
    ctx.set_session_id(b"chosen")
    ctx.load_verify_locations(pki.intermediate.cert_path)
    assert ctx.get_session_id() == b"chosen"  # a chosen one is kept


# -- virtual hosts ---------------------------------------------------------------------------


@pytest.mark.parametrize("cache", CACHES)
def test_a_session_for_one_virtual_host_does_not_resume_for_another(
    cache: str, pki: PKI, vhost_cert: Issued, start_server: Any, tls_version: int
) -> None:
    ctx = with_cache(make_server_context(vhost_cert, tls_version), cache)
    handled = Handled()
    server = start_server(ctx, handled)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, _, _ = connect_once(server.server_port, client, None, "a.test")
    assert resumes(server.server_port, client, session, "a.test")  # legitimate: the same name
    legitimate = handled.seen[-1]

    handled.seen.clear()
    _, reused, answer = connect_once(server.server_port, client, session, "b.test")
    assert not reused
    assert all(name == b"b.test" and not resumed for _, name, resumed in handled.seen), handled.seen
    if cache in ("store", "tickets"):  # the stored session is a miss, the ticket ignored: a full handshake for b.test
        assert answer == b"x" and len(handled.seen) == 1
    else:  # OpenSSL chose the session before SNI: refused with unrecognized_name
        assert answer == b"" and not handled.seen
    assert legitimate[1:] == (b"a.test", True)


# -- pausetls serve -----------------------------------------------------------------------------


@pytest.fixture
def serve_requiring(
    tmp_path: Path, server_cert: Issued, memcached_server: Any, key_file: Path
) -> Iterator[Callable[..., Served]]:
    """``serve_requiring(name, cafile, *extra)``: a ``pausetls serve`` that requires a client certificate from
    *cafile*, its sessions in the one memcached under the one key file; every one killed at teardown."""
    with killed_at_end() as started:

        def start(name: str, cafile: Path, *extra: str) -> Served:
            args = ("--cafile", str(cafile), "--require-client-cert", *extra)
            started.append(serve(tmp_path, name, server_cert, memcached_server.url, key_file, *args))
            return started[-1]

        yield start


def _refused(port: int, client: ssl.SSLContext, session: Any) -> bool:
    try:
        fetch_page(port, client, session)
    except (ssl.SSLError, OSError):
        return True
    return False


def test_serve_processes_with_other_client_cas_do_not_share_sessions(
    pki: PKI, other_pki: PKI, client_cert: Issued, serve_requiring: Callable[..., Served], tls_version: int
) -> None:
    a = serve_requiring("a", pki.ca_path)
    b = serve_requiring("b", other_pki.ca_path)
    client = stdlib_client_context(pki, client_cert, tls_version)
    _, session = fetch_page(a.port, client)
    assert resumed_within(a.port, client, session)["Session resumed"] == "yes"
    assert _refused(b.port, client, session), "a CA-A session resumed on the CA-B server"


def test_serve_session_id_context_shares_sessions_deliberately(
    tmp_path: Path,
    pki: PKI,
    other_pki: PKI,
    client_cert: Issued,
    serve_requiring: Callable[..., Served],
    tls_version: int,
) -> None:
    """A CA-A server and a CA-A + CA-B server: different policies, so no sharing by default; one
    ``--session-id-context`` makes them share (the CA-A client is still verified on each)."""
    both = tmp_path / "both-cas.pem"
    both.write_bytes(pki.ca_path.read_bytes() + other_pki.ca_path.read_bytes())
    client = stdlib_client_context(pki, client_cert, tls_version)
    for shared in (False, True):
        extra = ["--session-id-context", "fleet"] if shared else []
        a = serve_requiring(f"a{shared}", pki.ca_path, *extra)
        b = serve_requiring(f"b{shared}", both, *extra)
        _, session = fetch_page(a.port, client)
        assert resumed_within(a.port, client, session)["Session resumed"] == "yes"
        page, _ = fetch_page(b.port, client, session)
        assert page["Session resumed"] == ("yes" if shared else "no")


def test_serve_refuses_a_session_id_context_longer_than_32_bytes(tmp_path: Path) -> None:
    from pausetls.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--session-id-context", "x" * 33])
