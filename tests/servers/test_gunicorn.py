"""``gunicorn -k pausetls.gunicorn.GeventWorker``: real gunicorn processes, curl and stdlib ``ssl`` clients.

The config file (tests/gunicorn_site/gunicorn_conf.py) installs, through the ``pausetls_context``
hook, a verify callback that waits at a `gates.Gate` (a gevent wait inside OpenSSL's callback) and,
when asked, a memcached session store with a key file shared by the workers.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gunicorn")

from conftest import STDLIB_VERSIONS, stdlib_client_context
from curl import client_cert_args, curl_argv, json_bodies, tls_version_args
from gates import GENEROUS
from pki import PKI, Issued
from served import pausetls_env, session_key_file
from servers import MemcachedServer

SITE = Path(__file__).resolve().parent.parent / "gunicorn_site"
TESTS = SITE.parent
TLS12_CIPHER = "ECDHE-ECDSA-CHACHA20-POLY1305"
LISTENING = re.compile(r"Listening at: (?P<url>\S+)")


def gunicorn_env(**extra: str) -> dict[str, str]:
    """The checkout's pausetls, and gates, the app and the config file, importable."""
    env = pausetls_env(**extra)
    env["PYTHONPATH"] += f":{TESTS}:{SITE}"
    return env


class Gunicorn:
    """A gunicorn master (and its workers) serving tests/gunicorn_site/gunicorn_app.py; its log in a file."""

    def __init__(self, workdir: Path, server_cert: Issued, pki: PKI, *options: str, **env: str) -> None:
        self.log_path = workdir / "gunicorn.log"
        argv = [sys.executable, "-m", "gunicorn", "-k", "pausetls.gunicorn.GeventWorker"]
        argv += ["-c", str(SITE / "gunicorn_conf.py"), "--bind", "127.0.0.1:0", "--no-control-socket"]
        argv += ["--certfile", str(server_cert.chain_path), "--keyfile", str(server_cert.key_path)]
        argv += ["--ca-certs", str(pki.ca_path), *options, "gunicorn_app:app"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=workdir, env=gunicorn_env(**env), stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        deadline = time.monotonic() + GENEROUS
        while len(matches := list(re.finditer(pattern, self.log))) < count:
            assert self.proc.poll() is None, f"gunicorn exited ({self.proc.returncode}): {self.log}"
            assert time.monotonic() < deadline, f"no {count} x {pattern!r} in the log: {self.log}"
            time.sleep(0.05)
        return matches

    @property
    def port(self) -> int:
        url = self.wait_for_log(LISTENING.pattern)[0]["url"]
        assert url.startswith("https://127.0.0.1:"), url
        return int(url.rsplit(":", 1)[1])

    def stop(self) -> int:
        """SIGTERM: gunicorn's graceful stop; its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(GENEROUS)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(GENEROUS)


@pytest.fixture
def gunicorn(tmp_path: Path, server_cert: Issued, pki: PKI) -> Iterator[Any]:
    started: list[Gunicorn] = []

    def start(*options: str, **env: str) -> Gunicorn:
        started.append(Gunicorn(tmp_path, server_cert, pki, *options, **env))
        return started[-1]

    yield start
    for server in started:
        server.kill()


def curl(port: int, *args: Any) -> subprocess.Popen[str]:
    url = f"https://localhost:{port}/"
    resolve = ["--resolve", f"localhost:{port}:127.0.0.1"]
    return subprocess.Popen(curl_argv(*resolve, *args, url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def answer(client: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = client.communicate(timeout=GENEROUS)
    assert client.returncode == 0, stderr
    (body,) = json_bodies(stdout)
    return body  # type: ignore[no-any-return]


def test_pausing_verify_client_certificates_and_a_refused_client(
    gunicorn: Any, pki: PKI, client_cert: Issued, openssl: str
) -> None:
    options = ("--workers", "1", "--cert-reqs", "2", "--max-requests", "3", "--ciphers", TLS12_CIPHER)
    server = gunicorn(*options, PAUSETLS_TEST_TOGETHER="2")
    port = server.port
    # two handshakes of one worker paused in the verify callback at once: neither goes on alone
    together = [curl(port, *client_cert_args(pki, client_cert)) for _ in range(2)]
    first, second = (answer(client) for client in together)
    assert first["pid"] == second["pid"]
    assert max(second["verify_paused_together"]) == 2
    for seen in (first, second):
        assert seen["url_scheme"] == "https"
        assert seen["HTTPS"] == "on"
        assert seen["SSL_PROTOCOL"] == "TLSv1.3"
        assert seen["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert seen["SSL_CLIENT_S_DN"] == "CN=client one,O=pausetls tests"
        assert seen["SSL_TLS_SNI"] == "localhost"

    # without a certificate: refused in the handshake, one log line; the worker serves on
    refused = curl(port, "--cacert", pki.ca_path)
    refused.communicate(timeout=GENEROUS)
    assert refused.returncode != 0
    server.wait_for_log(r"TLS handshake failed: peer=127\.0\.0\.1:\d+ reason=.*peer did not return a certificate")
    third = answer(curl(port, *client_cert_args(pki, client_cert), *tls_version_args("1.2")))
    assert third["pid"] == first["pid"]
    assert third["SSL_PROTOCOL"] == "TLSv1.2"
    assert third["SSL_CIPHER"] == TLS12_CIPHER  # --ciphers (not the default choice, an AES-GCM suite)
    assert third["SSL_CLIENT_VERIFY"] == "SUCCESS"

    server.wait_for_log(r"Autorestarting worker after current request")  # --max-requests 3, as gunicorn's own
    server.wait_for_log(rf"Worker exiting \(pid: {first['pid']}\)")
    # the next worker answers, pausing its handshakes the same way (and it is serving: gunicorn, with its
    # own gevent worker too, loses a SIGTERM that arrives while a worker boots)
    again = [answer(client) for client in [curl(port, *client_cert_args(pki, client_cert)) for _ in range(2)]]
    assert again[0]["pid"] == again[1]["pid"] != first["pid"]
    assert max(again[1]["verify_paused_together"]) == 2
    assert server.stop() == 0
    assert "Traceback" not in server.log


def test_refuses_to_start_without_a_key(tmp_path: Path, server_cert: Issued) -> None:
    argv = [sys.executable, "-m", "gunicorn", "-k", "pausetls.gunicorn.GeventWorker", "--no-control-socket"]
    argv += ["--bind", "127.0.0.1:0", "--certfile", str(server_cert.chain_path), "gunicorn_app:app"]
    result = subprocess.run(argv, cwd=tmp_path, env=gunicorn_env(), capture_output=True, text=True, timeout=GENEROUS)
    assert result.returncode != 0
    assert "pausetls.gunicorn.GeventWorker serves HTTPS only: give it --certfile and --keyfile" in result.stderr
    assert "Traceback" not in result.stderr


def get(tls: ssl.SSLSocket, close: bool = False) -> dict[str, Any]:
    """One request on a kept-alive connection; the JSON answer."""
    tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n")
    response = b""
    while b"\r\n\r\n" not in response:
        response += tls.recv(65536)
    head, body = response.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"Content-Length: (\d+)", head, re.I)[1])  # type: ignore[index]
    while len(body) < length:
        body += tls.recv(65536)
    return json.loads(body)  # type: ignore[no-any-return]


def connect(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=GENEROUS)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)


def test_sessions_resume_across_workers_through_memcached(
    gunicorn: Any, tmp_path: Path, pki: PKI, client_cert: Issued, memcached_server: MemcachedServer, tls_version: int
) -> None:
    """The first worker holds its only connection slot (--worker-connections 1) with a kept-alive
    connection, so the second connection can only be accepted by the other worker: it resumes the
    first one's session from memcached, sealed with the key file both workers read."""
    keys = session_key_file(tmp_path)
    options = ("--workers", "2", "--worker-connections", "1", "--keep-alive", "60", "--cert-reqs", "2")
    server = gunicorn(*options, PAUSETLS_TEST_STORE=memcached_server.url, PAUSETLS_TEST_KEYS=str(keys))
    port = server.port
    server.wait_for_log(r"Booting worker with pid", count=2)
    ctx = stdlib_client_context(pki, client_cert, tls_version)
    with connect(port, ctx) as holder:
        first = get(holder)
        assert first["SSL_SESSION_RESUMED"] == "Initial"
        deadline = time.monotonic() + GENEROUS
        while get(holder)["sessions_stored"] < 1:  # the store write runs after the handshake
            assert time.monotonic() < deadline, "the first worker never stored its session"
            time.sleep(0.05)
        with connect(port, ctx, session=holder.session) as other:
            second = get(other, close=True)
            assert other.session_reused
    assert second["pid"] != first["pid"]  # the other worker
    assert second["SSL_SESSION_RESUMED"] == "Resumed"
    assert second["SSL_PROTOCOL"] == STDLIB_VERSIONS[tls_version].name.replace("_", ".")
    assert second["SSL_CLIENT_VERIFY"] == "SUCCESS"  # verified again on resumption, by the pausing callback

    # graceful stop: a response in progress when gunicorn gets SIGTERM is finished
    with connect(port, ctx) as tls:
        tls.sendall(b"GET /until-stopping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = b""
        while b"started" not in response:
            response += tls.recv(65536)
        server.proc.send_signal(signal.SIGTERM)
        while not response.endswith(b"\r\n0\r\n\r\n"):
            response += tls.recv(65536)
    assert b"finished" in response
    assert server.proc.wait(GENEROUS) == 0
