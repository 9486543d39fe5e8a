"""The pre-fork supervisor (``pausetls serve --workers N``): restarts, crash loops, orphans, graceful stop.

Each test runs real processes (``python -m pausetls serve`` or a script around
`pausetls.servers.prefork.run_workers`) and watches them through the log lines the
supervisor writes per start, readiness and death, polling with generous ceilings.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from conftest import stdlib_client_context
from gates import GENEROUS
from pki import PKI, Issued
from served import Served, pausetls_env

SERVING = re.compile(r"^pausetls: worker (?P<number>\d+) \(pid (?P<pid>\d+)\) serving$")
DIED = re.compile(r"^pausetls: worker (?P<number>\d+) \(pid (?P<pid>\d+)\) died: (?P<how>.+)$")
RESTARTED = re.compile(r"^pausetls: worker (?P<number>\d+) \(pid (?P<pid>\d+)\) restarted after [\d.]+ s$")
WORKER_STOPPING = re.compile(r"^pausetls: SIGTERM: stopping$")  # a server's own line (not the supervisor's)
CEILING = GENEROUS  # seconds: generous bounds on what takes well under a second on an idle machine

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)


@pytest.fixture
def serve(tmp_path: Path, server_cert: Issued) -> Iterator[Callable[..., Served]]:
    """Start ``pausetls serve --cert ... ARGS``; the server and any worker it left are killed at the end."""
    started: list[Served] = []

    def start(*args: str) -> Served:
        cert = ["--cert", str(server_cert.chain_path), "--key", str(server_cert.key_path)]
        served = Served([*cert, *args], tmp_path / f"serve{len(started)}")
        started.append(served)
        return served

    try:
        yield start
    finally:
        for served in started:
            for pid in _children(served.proc.pid) | {int(match["pid"]) for match in served.log_matches(SERVING)}:
                _kill(pid)  # first: an orphan would keep the server's stdout open
            served.kill()


def _children(pid: int) -> set[int]:
    try:
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def alive(pid: int) -> bool:
    """True while *pid* runs (a zombie waiting for an init that may never reap it does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = CEILING) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout} s")
        time.sleep(0.02)


def serving_pids(served: Served) -> set[int]:
    """Workers that said they serve and have not died since, from the supervisor's log."""
    dead = {int(match["pid"]) for match in served.log_matches(DIED)}
    return {int(match["pid"]) for match in served.log_matches(SERVING)} - dead


class HTTPConnection:
    """One keep-alive HTTPS connection (blocking stdlib ``ssl``: the server is another process)."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.tls = ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=CEILING), server_hostname="localhost"
        )
        self.reader: BinaryIO = self.tls.makefile("rb")

    def get(self) -> tuple[int, dict[str, str], bytes]:
        """GET the text page: the status, the headers (lower-case names) and the body."""
        self.tls.sendall(b"GET /?format=text HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status = int(self.reader.readline().split()[1])
        headers: dict[str, str] = {}
        while (line := self.reader.readline().decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, self.reader.read(int(headers["content-length"]))

    def at_eof(self) -> bool:
        return self.reader.read(1) == b""

    def close(self) -> None:
        self.reader.close()
        self.tls.close()


def served_by(port: int, ctx: ssl.SSLContext) -> int:
    """The pid of the worker that answered one request."""
    connection = HTTPConnection(port, ctx)
    try:
        status, _, body = connection.get()
    finally:
        connection.close()
    assert status == 200
    match = re.search(rb"^Server process:\s+(\d+)$", body, re.M)
    assert match is not None, body
    return int(match[1])


def workers_of(served: Served, count: int, excluding: set[int] = frozenset()) -> set[int]:  # type: ignore[assignment]
    """Once the supervisor has *count* children not in *excluding*: their pids (the process tree, not
    the log, so this holds for any supervisor; it fails at once if the supervisor exited)."""

    def enough() -> bool:
        if served.proc.poll() is not None:
            pytest.fail(f"the supervisor exited ({served.proc.returncode}): {served.stderr}")
        return len(_children(served.proc.pid) - excluding) >= count

    wait_for(enough, f"{count} workers running")
    return _children(served.proc.pid) - excluding


def test_killed_workers_are_restarted_and_serve(serve: Callable[..., Served], pki: PKI) -> None:
    served = serve("--workers", "2")
    old = workers_of(served, 2)
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    new = workers_of(served, 2, excluding=old)
    assert not any(alive(pid) for pid in old)
    assert served_by(served.port, stdlib_client_context(pki)) in new  # only new workers are left to answer
    deaths = {int(match["pid"]): match["how"] for match in served.log_matches(DIED)}
    assert deaths == {pid: "killed by SIGKILL" for pid in old}  # one line per death
    assert {int(match["pid"]) for match in served.log_matches(RESTARTED)} == new  # one line per restart
    assert served.stop(signal.SIGTERM) == 0


def test_workers_killed_again_and_again_stop_the_server_with_the_signal_exit_code(serve: Callable[..., Served]) -> None:
    """A crash loop: the supervisor gives up (RestartPolicy: more than 5 deaths of a worker in 60 s),
    and its exit code says the workers died of SIGKILL."""
    served = serve("--workers", "2")
    killed: set[int] = set()

    def kill_every_serving_worker() -> bool:
        for pid in serving_pids(served) - killed:
            _kill(pid)
            killed.add(pid)
        return served.proc.poll() is not None

    wait_for(kill_every_serving_worker, "stopped by the crash loop", timeout=2 * GENEROUS)
    assert served.proc.returncode == 128 + signal.SIGKILL
    assert re.search(r"died 6 times in 60 s: stopping the server \(exit code 137\)$", served.stderr, re.M)
    assert not any(alive(int(match["pid"])) for match in served.log_matches(SERVING))


def run_script(script: Path) -> subprocess.CompletedProcess[str]:
    """Run *script* in its own process group until it and every process holding its output are done;
    on timeout the whole group is killed (no process it forked outlives the test)."""
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=pausetls_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=CEILING)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


FAILING_WORKER = """
import logging, os, signal, sys
from pausetls.servers.prefork import run_workers

logging.basicConfig(level=logging.INFO, format="pausetls: %(message)s")

def serve(number, ready=None):
    if number == 0:  # worker 0 cannot start, however often it is restarted
        {failure}
    if ready is not None:
        ready()
    signal.pause()  # worker 1 serves until told to stop
    return 0

sys.exit(run_workers(2, serve))
"""


@pytest.mark.parametrize(
    ("failure", "expected"),
    [('raise RuntimeError("no way to start")', 1), ("os.kill(os.getpid(), signal.SIGKILL)", 128 + signal.SIGKILL)],
    ids=["raises", "killed"],
)
def test_a_worker_dying_before_it_serves_stops_the_server_non_zero(tmp_path: Path, failure: str, expected: int) -> None:
    script = tmp_path / "failing_worker.py"
    script.write_text(textwrap.dedent(FAILING_WORKER).format(failure=failure))
    result = run_script(script)
    assert result.returncode == expected, result.stderr
    assert f"worker 0 died 3 times in a row before serving: stopping the server (exit code {expected})" in result.stderr
    assert len([line for line in result.stderr.splitlines() if RESTARTED.search(line)]) == 2  # with backoff
    worker_1 = [match for line in result.stderr.splitlines() if (match := DIED.search(line)) and match["number"] == "1"]
    assert len(worker_1) == 1  # the healthy worker was stopped too, and reaped
    assert not alive(int(worker_1[0]["pid"]))


def test_workers_leave_when_the_supervisor_is_killed(serve: Callable[..., Served]) -> None:
    served = serve("--workers", "2")
    workers = workers_of(served, 2)
    try:
        served.proc.kill()
        served.proc.wait(CEILING)
        wait_for(lambda: not any(alive(pid) for pid in workers), "workers gone after the supervisor's SIGKILL")
    finally:
        for pid in workers:  # orphans, if they stayed, are no longer the supervisor's children
            _kill(pid)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_keep_alive_request_during_the_grace_period_gets_connection_close(
    serve: Callable[..., Served], pki: PKI, workers: str
) -> None:
    served = serve("--workers", workers, "--stop-timeout", str(CEILING))
    connection = HTTPConnection(served.port, stdlib_client_context(pki))
    try:
        status, headers, _ = connection.get()
        assert status == 200 and headers.get("connection") != "close"
        served.proc.send_signal(signal.SIGTERM)
        served.wait_for_log(WORKER_STOPPING, count=int(workers))  # the grace period has begun
        status, headers, body = connection.get()  # on the same connection
        assert status == 200 and b"TLS version" in body
        assert headers["connection"] == "close"
        assert connection.at_eof()  # closed after that response (close_notify: no SSLEOFError)
    finally:
        connection.close()
    assert served.proc.wait(CEILING) == 0  # no connection left: the server did not wait out the grace period


ORPHAN = """
import os, signal, sys
import gevent
from gevent.event import Event
from pausetls.servers._parent_watch import leave_when_parent_dies

ready_r, ready_w = os.pipe()
parent = os.getpid()
if os.fork():  # the parent: waits until its child watches it, then dies
    os.read(ready_r, 1)
    os._exit(0)
leave_when_parent_dies(parent, use_prctl=False, interval=0.05)  # only the polling fallback
stopped = Event()
gevent.signal_handler(signal.SIGTERM, stopped.set)
os.write(ready_w, b"1")
print("left on SIGTERM" if stopped.wait(30) else "still running", flush=True)
"""


def test_without_prctl_a_worker_polls_for_its_parent_and_leaves(tmp_path: Path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    result = run_script(script)  # returns once every writer of the stdout pipe is gone: the orphan too
    assert result.stdout == "left on SIGTERM\n", result.stderr
