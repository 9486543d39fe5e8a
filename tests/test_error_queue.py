"""OpenSSL's error queue is per thread: each thread must read back its own errors, never another's."""

from __future__ import annotations

import threading

import pausetls

THREADS = 8
ROUNDS = 400


def test_threads_failing_at_once_each_report_their_own_error() -> None:
    """Every thread fails to load a file only it names; OpenSSL puts that name in the error's data.

    The failures run through pausetls's own path (`Context` → the error-queue drain) in 8 threads at
    once, so drains overlap while cffi has released the GIL.
    """
    start = threading.Barrier(THREADS)
    wrong: list[str] = []

    def fail_repeatedly(thread: int) -> None:
        ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
        start.wait()
        for round_ in range(ROUNDS):
            path = f"/nonexistent/pausetls-thread-{thread}-round-{round_}"
            try:
                ctx.use_certificate_chain_file(path)
            except pausetls.Error as exc:
                if f"calling fopen({path}, r)" not in str(exc) or str(exc).count("fopen(") != 1:
                    wrong.append(f"thread {thread} expected {path}, got: {exc}")
            else:
                wrong.append(f"thread {thread}: loading {path} succeeded")

    threads = [threading.Thread(target=fail_repeatedly, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not wrong, f"{len(wrong)} of {THREADS * ROUNDS} failures misreported, e.g. {wrong[:3]}"
