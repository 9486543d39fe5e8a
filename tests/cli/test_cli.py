"""``pausetls serve``: the command line, the page it serves, and how it stops.

Most tests run ``python -m pausetls serve --port 0`` as a subprocess and talk
to it with curl; the page itself is also tested in-process with the stdlib
``ssl`` client (in a real thread: the test process is not monkey-patched).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest

import pausetls
from pausetls.cli import main as cli
from pausetls.servers import info_page

from conftest import require_binary, stdlib_client_context
from gates import GENEROUS
from pki import PKI, Issued
from served import SELF_SIGNED, SERVING, Served, killed_at_end, pausetls_env, start_tracked

OPTIONS = (
    "--host",
    "--port",
    "--cert",
    "--key",
    "--cafile",
    "--require-client-cert",
    "--handshake-timeout",
    "--tls-min",
    "--session-store",
    "--session-key-file",
    "--session-timeout",
    "--session-id-context",
    "--ticket-key-file",
    "--ticket-key-max-age",
    "--workers",
    "--stop-timeout",
    "--keylog",
)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start ``pausetls serve --port 0 ARGS...``; killed at the end of the test whatever happens."""
    with killed_at_end() as started:

        def start(*args: str | os.PathLike[str]) -> Served:
            return start_tracked(started, tmp_path, *args)

        yield start


@pytest.fixture
def curl() -> Callable[..., subprocess.CompletedProcess[str]]:
    binary = require_binary("curl")

    def run(port: int, *args: str | os.PathLike[str], path: str = "/?format=text") -> subprocess.CompletedProcess[str]:
        command = [binary, "-sS", "--noproxy", "*", "--max-time", "10", "-w", "\nstatus=%{http_code}\n"]
        command += [os.fspath(arg) for arg in args]
        return subprocess.run(
            [*command, f"https://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=30, check=False
        )

    return run


def client_cert_args(pki: PKI, client: Issued) -> list[str | os.PathLike[str]]:
    return ["--cacert", pki.ca_path, "--cert", client.chain_path, "--key", client.key_path]


def server_args(pki: PKI, server: Issued, *extra: str) -> list[str | os.PathLike[str]]:
    return ["--cert", server.chain_path, "--key", server.key_path, "--cafile", pki.ca_path, *extra]


# -- subprocess + curl ----------------------------------------------------------


def test_self_signed_certificate_and_text_page(
    serve: Callable[..., Served], curl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    served = serve()
    fingerprint = served.wait_for(SELF_SIGNED)["fingerprint"]
    assert served.wait_for(SERVING)["openssl"] in pausetls.openssl_version()
    assert [path.name for path in served.tmpdir.iterdir()]  # the throwaway certificate's directory

    result = curl(served.port, "-k")
    assert result.returncode == 0, result.stderr
    assert "status=200" in result.stdout
    assert re.search(r"^TLS version: +TLSv1\.3$", result.stdout, re.M)
    assert re.search(r"^ALPN: +http/1\.1$", result.stdout, re.M)
    assert re.search(r"^Client certificate: +none$", result.stdout, re.M)
    assert re.search(r"^Session resumed: +no$", result.stdout, re.M)

    served_der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", served.port)))
    assert hashlib.sha256(served_der).hexdigest().upper() == fingerprint.replace(":", "")

    assert served.stop(signal.SIGINT) == 0
    counters = served.counters()
    assert counters["accepted"] == counters["handshakes_completed"] == 2
    assert list(served.tmpdir.iterdir()) == []  # removed on exit


def test_html_page_and_content_negotiation(
    serve: Callable[..., Served], curl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    served = serve("--tls-min", "1.2")
    html_page = curl(served.port, "-k", "--tls-max", "1.2", path="/any/path").stdout
    assert "<td>TLSv1.2</td>" in html_page
    assert "<th>Client certificate</th><td>none</td>" in html_page
    text_page = curl(served.port, "-k", "-H", "Accept: text/plain", path="/").stdout
    assert re.search(r"^TLS version: +TLSv1\.3$", text_page, re.M)
    assert "<html>" not in text_page


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_required_client_certificate(
    serve: Callable[..., Served],
    curl: Callable[..., subprocess.CompletedProcess[str]],
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    version: str,
) -> None:
    served = serve(*server_args(pki, server_cert, "--require-client-cert"))
    pin = ["--tlsv" + version, "--tls-max", version]

    result = curl(served.port, *pin, *client_cert_args(pki, client_cert))
    assert result.returncode == 0, result.stderr
    assert "status=200" in result.stdout
    assert re.search(rf"^TLS version: +TLSv{re.escape(version)}$", result.stdout, re.M)
    assert re.search(r"^Client certificate: +CN=client one,O=pausetls tests$", result.stdout, re.M)

    refused = curl(served.port, *pin, "--cacert", pki.ca_path)
    assert refused.returncode != 0
    assert "status=200" not in refused.stdout

    assert served.stop() == 0
    counters = served.counters()
    assert counters["handshakes_completed"] >= 1
    assert counters["handshakes_failed"] >= 1


def test_optional_client_certificate(
    serve: Callable[..., Served],
    curl: Callable[..., subprocess.CompletedProcess[str]],
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
) -> None:
    served = serve(*server_args(pki, server_cert))
    anonymous = curl(served.port, "--cacert", pki.ca_path)
    assert anonymous.returncode == 0, anonymous.stderr
    assert re.search(r"^Client certificate: +none$", anonymous.stdout, re.M)
    identified = curl(served.port, *client_cert_args(pki, client_cert))
    assert identified.returncode == 0, identified.stderr
    assert re.search(r"^Client certificate: +CN=client one,O=pausetls tests$", identified.stdout, re.M)


def test_tls_min_refuses_older_clients(
    serve: Callable[..., Served], curl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    served = serve("--tls-min", "1.3")
    assert curl(served.port, "-k", "--tls-max", "1.2").returncode != 0
    result = curl(served.port, "-k")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^TLS version: +TLSv1\.3$", result.stdout, re.M)
    assert served.stop() == 0
    assert served.counters()["handshakes_failed"] == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_with_an_idle_connection_open(serve: Callable[..., Served], signum: int) -> None:
    """An idle keep-alive connection does not hold the server up for more than a few seconds."""
    served = serve()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(socket.create_connection(("127.0.0.1", served.port), timeout=10)) as idle:
        idle.sendall(b"GET /?format=text HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert served.stop(signum, timeout=GENEROUS) == 0
        assert time.monotonic() - started < GENEROUS  # the idle connection would hold it up for ever
    assert served.counters()["handshakes_completed"] == 1


def test_handshake_timeout(serve: Callable[..., Served]) -> None:
    """A client that connects and says nothing is dropped after --handshake-timeout seconds."""
    served = serve("--handshake-timeout", "0.3")
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as silent:
        assert silent.recv(1024) == b""  # the server closed it
    assert served.stop() == 0
    counters = served.counters()
    assert counters["handshakes_timed_out"] == counters["handshakes_failed"] == 1


def test_unreadable_certificate_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    result = subprocess.run(
        [sys.executable, "-m", "pausetls", "serve", "--port", "0", "--cert", missing, "--key", missing],
        cwd=tmp_path,
        env=pausetls_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert f"pausetls: error: no such file: {missing} (the certificate chain)" in result.stderr
    assert "serving" not in result.stdout


# -- argument parsing (in-process) ----------------------------------------------


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in OPTIONS:
        assert option in text
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "serve" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--cert", "server.pem"], "--cert and --key go together"),
        (["serve", "--key", "server.key"], "--cert and --key go together"),
        (["serve", "--require-client-cert"], "--require-client-cert needs --cafile"),
        (["serve", "--tls-min", "1.1"], "invalid choice: '1.1'"),
        (["serve", "--port", "70000"], "port must be 0-65535"),
        (["serve", "--port", "https"], "port must be 0-65535"),
        (["serve", "--handshake-timeout", "0"], "must be a positive number of seconds"),
        (["serve", "--handshake-timeout", "soon"], "must be a positive number of seconds"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_options_exit_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# -- the page and its handler (in-process) -----------------------------------------


def in_thread(fn: Callable[[], Any]) -> Any:
    return gevent.get_hub().threadpool.spawn(fn).get(timeout=30)


def get_page(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> tuple[str, ssl.SSLSession]:
    """GET /?format=text on a new connection (resuming *session*): the body and the session to resume next."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
        tls.sendall(b"GET /?format=text HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
        assert tls.session is not None
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Type: text/plain" in head
        return body.decode(), tls.session


def test_page_shows_client_subject_alpn_and_resumption(
    pki: PKI, server_cert: Issued, client_cert: Issued, tls_version: int
) -> None:
    seen: list[info_page.TLSDetails] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        seen.append(environ["pausetls.tls"])
        return info_page.application(environ, start_response)

    context = cli.server_context(server_cert.chain_path, server_cert.key_path, cafile=pki.ca_path)
    server = pausetls.WSGIServer(
        ("127.0.0.1", 0), app, context=context, handler_class=info_page.TLSInfoHandler, log=None, handshake_timeout=10
    )
    server.start()
    try:
        client = stdlib_client_context(pki, client_cert, tls_version)
        client.set_alpn_protocols(["h2", "http/1.1"])
        first, session = in_thread(lambda: get_page(server.server_port, client))
        second, _ = in_thread(lambda: get_page(server.server_port, client, session))
    finally:
        server.stop(timeout=1)

    version = "TLSv1.2" if tls_version == pausetls.TLS1_2_VERSION else "TLSv1.3"
    assert re.search(rf"^TLS version: +{version}$", first, re.M)
    assert re.search(r"^Client certificate: +CN=client one,O=pausetls tests$", first, re.M)
    assert re.search(r"^ALPN: +http/1\.1$", first, re.M)
    assert re.search(r"^Session resumed: +no$", first, re.M)
    assert re.search(r"^Session resumed: +yes$", second, re.M)
    assert [details["resumed"] for details in seen] == [False, True]
    assert seen[0]["version"] == version
    assert seen[0]["client_subject"] == "CN=client one,O=pausetls tests"
    assert server.stats.resumed == 1
