"""``pausetls serve --ticket-key-file``: processes given the same key file resume each other's tickets,
through rotations announced by SIGHUP; real clients (CPython's ``ssl``, ``openssl s_client``)."""

from __future__ import annotations

import re
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pausetls

from conftest import stdlib_client_context
from peers import PeerGroup
from pki import PKI, Issued
from served import Served, fetch_page, killed_at_end, run_pausetls, start_tracked

RELOADED = re.compile(r"ticket keys reloaded from .*: 2 keys")


def keys(*args: str) -> str:
    result = run_pausetls(Path(tempfile.gettempdir()), "keys", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "ticket-keys"
    keys("new", str(path))
    return path


@pytest.fixture
def serve_tickets(tmp_path: Path, server_cert: Issued, key_file: Path) -> Iterator[Callable[..., Served]]:
    with killed_at_end() as started:

        def start(*extra: str) -> Served:
            cert = ["--cert", server_cert.chain_path, "--key", server_cert.key_path]
            return start_tracked(started, tmp_path, *cert, "--ticket-key-file", key_file, *extra)

        yield start


def test_serve_processes_with_the_same_key_file_resume_each_others_tickets(
    tmp_path: Path,
    openssl: str,
    peers: PeerGroup,
    pki: PKI,
    serve_tickets: Callable[..., Served],
    tls_version: int,
) -> None:
    a, b = serve_tickets(), serve_tickets()
    client = stdlib_client_context(pki, version=tls_version)
    first, session = fetch_page(a.port, client)
    assert first["Session resumed"] == "no"
    second, _ = fetch_page(b.port, client, session)  # no store: only the ticket can resume it
    assert second["Session resumed"] == "yes" and second["Server process"] != first["Server process"]

    flag = "-tls1_3" if tls_version == pausetls.TLS1_3_VERSION else "-tls1_2"
    saved = str(tmp_path / "s_client.pem")
    for port, session_flag, expected in ((a.port, "-sess_out", b"New, "), (b.port, "-sess_in", b"Reused, ")):
        argv = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.ca_path), flag]
        peer = peers.process([*argv, "-servername", "localhost", session_flag, saved, "-no_ign_eof"])
        peer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        peer.wait()
        assert b"\n" + expected in peer.stdout.data and b"200 OK" in peer.stdout.data

    assert b.stop() == 0
    assert b.counters()["tickets"]["resumed"] == 2


def test_rotation_and_sighup_keep_earlier_tickets_resumable(
    pki: PKI, serve_tickets: Callable[..., Served], key_file: Path, tls_version: int
) -> None:
    a, b = serve_tickets(), serve_tickets()
    client = stdlib_client_context(pki, version=tls_version)
    _, before = fetch_page(a.port, client)

    assert "key 2 is now current" in keys("rotate", str(key_file))
    for served in (a, b):
        served.proc.send_signal(signal.SIGHUP)
        served.wait_for_log(RELOADED)
    page, renewed = fetch_page(b.port, client, before)  # made under key 1, now decrypt-only
    assert page["Session resumed"] == "yes"
    page, _ = fetch_page(a.port, client, renewed)
    assert page["Session resumed"] == "yes"
    assert "current (encrypts)" in keys("show", str(key_file)).splitlines()[-1]
    assert b.stop() == 0 and b.counters()["tickets"]["renewed"] == 1


def test_a_retired_key_gives_a_full_handshake(pki: PKI, serve_tickets: Callable[..., Served], key_file: Path) -> None:
    issuing = serve_tickets()
    client = stdlib_client_context(pki)
    _, before = fetch_page(issuing.port, client)
    line = key_file.read_text().splitlines()[-1]
    key_id, secret, created = line.split(":")
    key_file.write_text(f"{key_id}:{secret}:{int(created) - 7200}\n")  # the same key, made two hours ago
    keys("rotate", str(key_file))
    keeping, retiring = serve_tickets("--ticket-key-max-age", "10800"), serve_tickets("--ticket-key-max-age", "3600")
    assert fetch_page(keeping.port, client, before)[0]["Session resumed"] == "yes"
    assert fetch_page(retiring.port, client, before)[0]["Session resumed"] == "no"
    assert retiring.stop() == 0
    counters = retiring.counters()
    assert counters["tickets"]["unknown"] == 1 and counters["handshakes_failed"] == 0


def test_sighup_with_a_broken_key_file_keeps_the_keys_in_use(
    pki: PKI, serve_tickets: Callable[..., Served], key_file: Path
) -> None:
    served = serve_tickets()
    client = stdlib_client_context(pki)
    _, session = fetch_page(served.port, client)
    key_file.write_text("not a key\n")
    served.proc.send_signal(signal.SIGHUP)
    served.wait_for_log(re.compile(r"SIGHUP: .*keys:1: expected .*; the ticket keys in use stay"))
    assert fetch_page(served.port, client, session)[0]["Session resumed"] == "yes"


def test_sighup_to_a_pre_forked_server_reloads_every_worker(
    serve_tickets: Callable[..., Served], key_file: Path
) -> None:
    served = serve_tickets("--workers", "2")
    served.wait_for_log(re.compile(r"worker \d \(pid \d+\) serving"), count=2)
    keys("rotate", str(key_file))
    served.proc.send_signal(signal.SIGHUP)
    served.wait_for_log(RELOADED, count=2)
    assert served.proc.poll() is None, "the supervisor survives SIGHUP"
    assert served.stop() == 0
