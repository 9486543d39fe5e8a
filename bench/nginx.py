"""nginx as the C anchor: one worker on loopback, with a configuration generated into a temporary directory.

Its own counter of completed handshakes is the ``requests`` figure of
``stub_status`` (every TLS connection of the benchmark makes one request),
read on a second, plain-HTTP port; the harness's own reads are subtracted.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from bench.children import ChildError
from bench.pki import BenchPKI
from bench.plan import Cell
from bench.procstat import children

NGINX_MISSING = (
    "nginx was not found (on PATH, at /usr/sbin/nginx or at --nginx): the nginx anchor is skipped. "
    "Fix: apt-get install nginx (Debian/Ubuntu), "
    "or pass --nginx PATH"
)
START_TIMEOUT = 10.0

CONFIG = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    keepalive_timeout {keepalive};
    keepalive_requests 100000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {server_chain};
        ssl_certificate_key {server_key};
        ssl_protocols TLSv1.3;
        {client_cert}
        {sessions}
        location / {{ return 200 "ok"; }}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location / {{ stub_status; }}
    }}
}}
"""


def find_nginx(path: str | None = None) -> str | None:
    """The nginx binary: *path*, on PATH, or Debian's /usr/sbin/nginx (not on a user's PATH)."""
    candidates = [path] if path else [shutil.which("nginx"), "/usr/sbin/nginx"]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def nginx_version(binary: str) -> str:
    """``nginx/1.22.1 (built with OpenSSL ..., running with OpenSSL ...)``."""
    output = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False).stderr.splitlines()
    version = output[0].removeprefix("nginx version: ") if output else "unknown"
    built = next((line for line in output if "OpenSSL" in line), "")
    return f"{version} ({built})" if built else version


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _sessions(cell: Cell, directory: Path) -> str:
    """nginx's resumption: a ticket key file (80 bytes: name, HMAC and AES-256 keys) for ticket cells,
    else its shared in-memory cache with tickets off."""
    if not cell.resumed:
        return ""
    if cell.callback == "tickets":
        key = directory / "ticket.key"
        key.write_bytes(os.urandom(80))
        return f"ssl_session_cache off; ssl_session_tickets on; ssl_session_ticket_key {key};"
    return "ssl_session_cache shared:bench:32m; ssl_session_tickets off;"


class NginxServer:
    """One nginx master with one worker for one cell."""

    def __init__(self, binary: str, cell: Cell, pki: BenchPKI, directory: Path, nofile: int) -> None:
        self.port = free_port()
        self.status_port = free_port()
        self._probes = 0
        self._dir = directory
        client_cert = f"ssl_client_certificate {pki.ca}; ssl_verify_client on; ssl_verify_depth 3;"
        config = CONFIG.format(
            dir=directory,
            nofile=nofile,
            keepalive="75s" if cell.work == "http" else "0",  # the http cells keep their connections
            connections=min(nofile - 64, max(1024, 2 * cell.concurrency + 64)),
            port=self.port,
            status_port=self.status_port,
            server_chain=pki.server_chain,
            server_key=pki.server_key,
            client_cert=client_cert if cell.client_cert else "",
            sessions=_sessions(cell, directory),
        )
        (directory / "nginx.conf").write_text(config)
        argv = [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", str(directory / "error.log")]
        self._log = (directory / "stderr.log").open("w+b")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + START_TIMEOUT
        while not (_accepts(self.status_port) and _accepts(self.port) and children(self.process.pid)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ChildError(f"nginx did not start: {self._errors()}")
            time.sleep(0.05)

    def _errors(self) -> str:
        log = self._dir / "error.log"
        return (log.read_text(errors="replace") if log.exists() else "")[-2000:] or "(no error log)"

    def pids(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]

    def _read_status(self) -> tuple[int, int]:
        """(active connections, requests) from stub_status; this read is itself a request."""
        self._probes += 1
        with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/", timeout=10) as reply:
            lines = reply.read().decode().splitlines()
        return int(lines[0].split(":")[1]), int(lines[2].split()[2])

    def stats(self) -> dict[str, int]:
        active, requests = self._read_status()
        return {
            "handshakes_completed": requests - self._probes,  # one request per TLS connection
            "units": requests - self._probes,  # the http cells: one per request
            "handshaking": max(0, active - 1),  # open TLS connections (the status read is one)
            "greenlets": 0,
            "paused": 0,
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
