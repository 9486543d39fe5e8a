"""OpenSSL's error queue is per thread: each thread must read back its own errors, never another's."""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

import pausetls

from conftest import make_server_context, wait_until
from health import Watch
from pki import Issued
from reliability import HOST, client_hello

THREADS = 8
ROUNDS = 400


def test_threads_failing_at_once_each_report_their_own_error() -> None:
    """Every thread sets a group only it names; OpenSSL puts that name in the error's data.

    The failures run through pausetls's own path (`Context` → the error-queue drain) in 8 threads at
    once, so drains overlap while cffi has released the GIL.
    """
    start = threading.Barrier(THREADS)
    wrong: list[str] = []

    def fail_repeatedly(thread: int) -> None:
        ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
        start.wait()
        for round_ in range(ROUNDS):
            # not a missing file: pausetls names those itself, before OpenSSL (and its error queue) sees them
            group = f"no-such-group-thread-{thread}-round-{round_}"
            try:
                ctx.set_groups(group)
            except pausetls.Error as exc:
                if f"(group '{group}' cannot be set)" not in str(exc) or str(exc).count("cannot be set") != 1:
                    wrong.append(f"thread {thread} expected {group}, got: {exc}")
            else:
                wrong.append(f"thread {thread}: setting {group} succeeded")

    threads = [threading.Thread(target=fail_repeatedly, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not wrong, f"{len(wrong)} of {THREADS * ROUNDS} failures misreported, e.g. {wrong[:3]}"


# fatal alerts a client sends after its ClientHello; OpenSSL fails the handshake with the alert's
# own reason and "SSL alert number N" as the error's data
ALERTS = [10, 20, 21, 22, 30, 40, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51]
CONNECTIONS_PER_CLIENT = 150


def test_concurrent_failed_handshakes_in_threads_each_log_their_own_reason(
    server_cert: Issued, start_server: Any, watch: Watch
) -> None:
    """16 client threads, each sending a ClientHello and then its own fatal alert to a ThreadedTLSServer,
    150 times: every failure's log line names the alert that connection sent."""
    ctx = make_server_context(server_cert, pausetls.TLS1_2_VERSION)  # the alert comes before any encryption
    server = start_server(ctx, server_class=pausetls.ThreadedTLSServer)
    hello = client_hello(ssl.TLSVersion.TLSv1_2)
    start = threading.Barrier(len(ALERTS))
    # each client thread connects from an address of its own, which the server's log line names
    alert_from = {f"127.0.0.{10 + i}": alert for i, alert in enumerate(ALERTS)}

    def send_alerts(source: str) -> None:
        start.wait()
        for _ in range(CONNECTIONS_PER_CLIENT):
            with socket.create_connection((HOST, server.server_port), timeout=10, source_address=(source, 0)) as sock:
                sock.sendall(hello + bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, alert_from[source]]))
                while sock.recv(1024):  # until the server closes
                    pass

    threads = [threading.Thread(target=send_alerts, args=(source,)) for source in alert_from]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    total = len(ALERTS) * CONNECTIONS_PER_CLIENT
    assert wait_until(lambda: server.stats.handshakes_failed == total, timeout=30), server.stats
    wrong = []
    for line in watch.lines():
        alert = alert_from[line.split("peer=", 1)[1].split(":", 1)[0]]
        if line.count("SSL alert number") != 1 or f"SSL alert number {alert})" not in line:
            wrong.append(f"sent alert {alert}, logged: {line}")
    assert len(watch.lines()) == total
    assert not wrong, f"{len(wrong)} of {total} failures logged another's reason, e.g. {wrong[:3]}"
