"""Stateless session tickets under a shared key ring (`pausetls.TicketKeys`), TLS 1.2 and 1.3, real clients.

Servers here are separate `Context`s in one process given the same key file, as
processes of a fleet would be (``tests/cli/test_serve_tickets.py`` runs them as
``pausetls serve`` processes).  The binding attacks common to every cache (another
virtual host, an SNI switch to another client policy) run for tickets too in
``test_session_binding.py`` (``CACHES``); the ones here move a ticket between two
servers that share keys but not their client policy.
"""

from __future__ import annotations

import base64
import logging
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

import pausetls
from pausetls.sealing import SessionSealer
from pausetls.sessions.key_file import new_key, read_key_file, rotated, write_key_file
from pausetls.stores import MemoryStore

from conftest import echo_handler, make_server_context, stdlib_client_context, wait_until
from peers import PeerGroup
from pki import PKI, Issued
from reliability import client_cert_args, connect_once, mutual_context, s_client_echo


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    write_key_file(path, [new_key(1)], replace=False)
    return path


def ticket_server(start_server: Any, server_cert: Issued, version: int, keys: pausetls.TicketKeys) -> Any:
    ctx = make_server_context(server_cert, version)
    ctx.set_ticket_keys(keys)
    return start_server(ctx)


def test_servers_with_the_same_key_file_resume_each_others_tickets(
    pki: PKI, server_cert: Issued, start_server: Any, key_file: Path, tls_version: int
) -> None:
    a = ticket_server(start_server, server_cert, tls_version, pausetls.TicketKeys.from_file(key_file))
    b = ticket_server(start_server, server_cert, tls_version, pausetls.TicketKeys.from_file(key_file))
    other = ticket_server(start_server, server_cert, tls_version, pausetls.TicketKeys.generate())
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, reused, _ = connect_once(a.server_port, client)
    assert not reused
    assert session is not None and session.has_ticket
    _, reused, answer = connect_once(b.server_port, client, session)
    assert (reused, answer) == (True, b"x")
    assert b.stats.resumed == 1 and b.context.ticket_keys.stats.resumed == 1
    _, reused, answer = connect_once(other.server_port, client, session)  # other keys: a full handshake
    assert (reused, answer) == (False, b"x")
    assert other.context.ticket_keys.stats.unknown == 1 and other.stats.handshakes_failed == 0


def test_tls13_clients_using_each_ticket_once_keep_resuming(
    pki: PKI, server_cert: Issued, start_server: Any, key_file: Path
) -> None:
    """OpenSSL sends new TLS 1.3 tickets after a resumption only when the key callback says renew."""
    keys = pausetls.TicketKeys.from_file(key_file)
    servers = [ticket_server(start_server, server_cert, pausetls.TLS1_3_VERSION, keys) for _ in range(2)]
    client = stdlib_client_context(pki, version=pausetls.TLS1_3_VERSION, cooperative=True)
    session, _, _ = connect_once(servers[0].server_port, client)
    seen = [session.id] if session is not None else []
    for hop in range(3):  # each resumption offers the newest ticket, the one the previous resumption sent
        session, reused, answer = connect_once(servers[hop % 2].server_port, client, session)
        assert (reused, answer) == (True, b"x"), f"resumption {hop + 1}"
        assert session is not None and session.id not in seen, "a new ticket came with the resumption"
        seen.append(session.id)
    assert keys.stats.resumed == 3


def test_rotation_keeps_earlier_tickets_resumable_and_renews_them(
    pki: PKI, server_cert: Issued, start_server: Any, key_file: Path, tls_version: int
) -> None:
    keys = pausetls.TicketKeys.from_file(key_file)
    server = ticket_server(start_server, server_cert, tls_version, keys)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    before, _, _ = connect_once(server.server_port, client)

    write_key_file(key_file, rotated(read_key_file(key_file)), replace=True)
    keys.reload()
    renewed, reused, _ = connect_once(server.server_port, client, before)
    assert reused and keys.stats.renewed == 1

    # the renewed ticket is under the new key: a server holding only that key resumes it
    only_new = pausetls.TicketKeys(keys_of(key_file)[-1:])
    newcomer = ticket_server(start_server, server_cert, tls_version, only_new)
    assert connect_once(newcomer.server_port, client, renewed)[1]
    assert not connect_once(newcomer.server_port, client, before)[1]  # while the old ticket is not


def keys_of(path: Path) -> list[pausetls.sessions.tickets.TicketKey]:
    return [pausetls.sessions.tickets.TicketKey.derive(key.secret, key.created) for key in read_key_file(path)]


def test_a_retired_key_gives_a_full_handshake(
    tmp_path: Path, pki: PKI, server_cert: Issued, start_server: Any, tls_version: int
) -> None:
    old = new_key(1, now=time.time() - 3600)
    path = tmp_path / "keys"
    write_key_file(path, [old], replace=False)
    issuing = ticket_server(start_server, server_cert, tls_version, pausetls.TicketKeys.from_file(path))
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, _, _ = connect_once(issuing.server_port, client)

    write_key_file(path, rotated([old]), replace=True)
    keeping = pausetls.TicketKeys.from_file(path, max_age=7200)
    retiring = pausetls.TicketKeys.from_file(path, max_age=600)  # the old key is an hour old
    assert connect_once(ticket_server(start_server, server_cert, tls_version, keeping).server_port, client, session)[1]
    server = ticket_server(start_server, server_cert, tls_version, retiring)
    _, reused, answer = connect_once(server.server_port, client, session)
    assert (reused, answer) == (False, b"x")
    assert retiring.stats.unknown == 1 and server.stats.handshakes_failed == 0


def test_old_key_files_without_creation_times_still_load(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# written before keys had ages\n3:" + "ab" * 32 + "\n")  # id:hex only
    (key,) = read_key_file(path)
    assert key.id == 3 and key.created is None and key.age() is None
    assert SessionSealer.from_file(path).current == 3
    assert pausetls.TicketKeys.from_file(path, max_age=1).current.created is None


def test_a_ticket_from_a_server_without_client_certificates_does_not_resume_where_they_are_required(
    pki: PKI, server_cert: Issued, client_cert: Issued, start_server: Any, key_file: Path, tls_version: int
) -> None:
    keys = pausetls.TicketKeys.from_file(key_file)  # the same keys: only the client policy differs
    open_server = ticket_server(start_server, server_cert, tls_version, keys)
    strict_ctx = mutual_context(pki, server_cert, tls_version, None)
    strict_ctx.set_ticket_keys(keys)
    strict_server = start_server(strict_ctx)

    anonymous = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, _, _ = connect_once(open_server.server_port, anonymous)
    assert connect_once(open_server.server_port, anonymous, session)[1]  # legitimate where it was made
    _, reused, answer = connect_once(strict_server.server_port, anonymous, session)
    assert (reused, answer) == (False, b""), "no certificate, no ticket: refused"

    # with a certificate, the ticket is still not used: a full handshake verifies it
    holder = stdlib_client_context(pki, client_cert, tls_version, cooperative=True)
    session, _, _ = connect_once(open_server.server_port, holder)
    _, reused, answer = connect_once(strict_server.server_port, holder, session)
    assert (reused, answer) == (False, b"x")


def test_s_client_tickets_resume_across_servers_but_not_for_another_name_or_policy(
    tmp_path: Path,
    openssl: str,
    peers: PeerGroup,
    pki: PKI,
    client_cert: Issued,
    start_server: Any,
    key_file: Path,
    tls_version: int,
) -> None:
    vhosts = pki.issue("vhosts", names=("a.test", "b.test", "localhost"))
    keys = pausetls.TicketKeys.from_file(key_file)
    ports = [ticket_server(start_server, vhosts, tls_version, keys).server_port for _ in range(2)]
    strict = mutual_context(pki, vhosts, tls_version, None)
    strict.set_ticket_keys(keys)
    strict_port = start_server(strict, echo_handler).server_port

    saved = str(tmp_path / "a.pem")
    first = s_client_echo(peers, openssl, pki, ports[0], tls_version, "-servername", "a.test", "-sess_out", saved)
    assert b"\nNew, " in first and b"ping\n" in first
    again = s_client_echo(peers, openssl, pki, ports[1], tls_version, "-servername", "a.test", "-sess_in", saved)
    assert b"\nReused, " in again and b"ping\n" in again  # the other server of the fleet

    other_name = s_client_echo(peers, openssl, pki, ports[1], tls_version, "-servername", "b.test", "-sess_in", saved)
    assert b"\nNew, " in other_name and b"ping\n" in other_name, other_name.decode(errors="replace")  # full handshake
    assert keys.stats.other_name == 1
    cert = client_cert_args(client_cert, pki)
    policy = s_client_echo(
        peers, openssl, pki, strict_port, tls_version, "-servername", "a.test", "-sess_in", saved, *cert
    )
    assert b"\nReused, " not in policy and b"ping\n" in policy, policy.decode(errors="replace")


def test_tickets_and_a_session_store_combine(pki: PKI, server_cert: Issued, start_server: Any, key_file: Path) -> None:
    """Ticket keys clear OP_NO_TICKET whatever the order; TLS 1.3 and ticket-capable TLS 1.2 clients resume
    by ticket (nothing written to the store for them), TLS 1.2 clients without tickets by session id."""
    for order in ("store first", "tickets first"):
        store = MemoryStore()
        ctx = make_server_context(server_cert)
        if order == "store first":
            ctx.set_session_cache(store)
        ctx.set_ticket_keys(pausetls.TicketKeys.from_file(key_file))
        if order == "tickets first":
            ctx.set_session_cache(store)
        assert not ctx.get_options() & pausetls.OP_NO_TICKET, order
        server = start_server(ctx)

        tls13 = stdlib_client_context(pki, version=pausetls.TLS1_3_VERSION, cooperative=True)
        session, _, _ = connect_once(server.server_port, tls13)
        assert connect_once(server.server_port, tls13, session)[1]
        no_tickets = stdlib_client_context(pki, version=pausetls.TLS1_2_VERSION, cooperative=True)
        no_tickets.options |= ssl.OP_NO_TICKET
        session, _, _ = connect_once(server.server_port, no_tickets)
        assert session is not None and not session.has_ticket
        assert wait_resumed(server.server_port, no_tickets, session), order
        assert len(store) == 1, "only the TLS 1.2 session without a ticket went to the store"


def wait_resumed(port: int, client: ssl.SSLContext, session: Any) -> bool:
    return wait_until(lambda: connect_once(port, client, session)[1])


def test_key_material_is_never_logged(
    caplog: pytest.LogCaptureFixture, pki: PKI, server_cert: Issued, start_server: Any, key_file: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = pausetls.TicketKeys.from_file(key_file)
    server = ticket_server(start_server, server_cert, pausetls.TLS1_2_VERSION, keys)
    client = stdlib_client_context(pki, cooperative=True)
    session, _, _ = connect_once(server.server_port, client)
    write_key_file(key_file, rotated(read_key_file(key_file)), replace=True)
    keys.reload()
    assert connect_once(server.server_port, client, session)[1]
    file_secrets = [key.secret.hex() for key in read_key_file(key_file)]
    derived = [key.hmac_key.hex() for key in keys_of(key_file)] + [key.aes_key.hex() for key in keys_of(key_file)]
    key_file.write_text(f"1:{file_secrets[0][:-1]}\n")  # a broken line: its error names the line, never its content
    with pytest.raises(ValueError, match=r"keys:1: expected") as broken:
        keys.reload()
    logging.getLogger("pausetls.test").info("%r %r %s", keys, keys.current, broken.value)

    assert "ticket keys reloaded" in caplog.text
    for secret in file_secrets + derived:
        assert secret[:16] not in caplog.text


def _tampered(saved: Path, key_name: bytes, offset: int) -> Path:
    """A copy of s_client's saved session whose ticket has one byte flipped at *offset* (from its end if < 0)."""
    lines = saved.read_text().split("\n")
    der = bytearray(base64.b64decode("".join(line for line in lines if line and not line.startswith("-----"))))
    start = der.find(key_name)  # a ticket begins with the name of the key that encrypted it
    assert start > 0, "the ticket is in the saved session"
    der[start + offset if offset >= 0 else start + _der_length_before(der, start) + offset] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode()
    out = saved.with_name(f"tampered{offset}.pem")
    out.write_text(f"-----BEGIN SSL SESSION PARAMETERS-----\n{body}-----END SSL SESSION PARAMETERS-----\n")
    return out


def _der_length_before(der: bytes, start: int) -> int:
    """The length of the DER OCTET STRING whose contents begin at *start* (short or 1-2 byte long form)."""
    if der[start - 2] == 0x04:
        return der[start - 1]
    if der[start - 2] == 0x81:
        return der[start - 1]
    assert der[start - 3] == 0x82, "an OCTET STRING length"
    return int.from_bytes(der[start - 2 : start], "big")


def test_forged_tickets_give_full_handshakes(
    tmp_path: Path,
    openssl: str,
    peers: PeerGroup,
    pki: PKI,
    server_cert: Issued,
    start_server: Any,
    key_file: Path,
    tls_version: int,
) -> None:
    """From the attacker's side: a ticket with a changed key name, ciphertext or HMAC is never used, and
    costs the attacker only a full handshake (no failure, nothing for other clients)."""
    keys = pausetls.TicketKeys.from_file(key_file)
    server = ticket_server(start_server, server_cert, tls_version, keys)
    saved = tmp_path / "session.pem"
    assert b"\nNew, " in s_client_echo(peers, openssl, pki, server.server_port, tls_version, "-sess_out", str(saved))
    assert b"\nReused, " in s_client_echo(peers, openssl, pki, server.server_port, tls_version, "-sess_in", str(saved))
    for offset, what in ((3, "key name"), (40, "ciphertext"), (-1, "HMAC")):
        forged = _tampered(saved, keys.current.name, offset)
        out = s_client_echo(peers, openssl, pki, server.server_port, tls_version, "-sess_in", str(forged))
        assert b"\nNew, " in out and b"ping\n" in out, f"{what}: {out.decode(errors='replace')}"
    assert keys.stats.unknown == 1  # the changed key name; the other two fail OpenSSL's HMAC check
    assert server.stats.handshakes_failed == 0
