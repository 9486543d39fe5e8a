"""Callback faults: every handshake hook raising, hanging, answering nonsense or re-entering its connection.

Each fault fails that one handshake closed, with a log line naming the
callback, and leaves the server serving: the next client (same hook, now
well-behaved) completes.  The client is ``openssl s_client`` because it
exercises every hook in one handshake (client certificate, SNI, ALPN and an
OCSP status request).  Every case runs under each driver (gevent, threads,
asyncio): a pause is a pending result of that driver (`drivers.later`).

Session *get* is different by design: a store that fails is a miss, so the
client gets a full (fully verified) handshake instead of a resumption.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from gevent.event import Event

import pausetls
from pausetls.core._job import Job

from conftest import make_server_context, stdlib_client_context, wait_until
from drivers import later, never
from gates import GENEROUS
from health import Watch
from peers import PeerGroup
from pki import PKI, Issued
from reliability import MUTUAL, client_cert_args, connect_once, s_client_argv

pytestmark = pytest.mark.timing  # CI also runs this file with every core hogged (tests/under_load.py)

CALLBACK_TIMEOUT = 0.2


@dataclass
class Hook:
    """How to install a server hook, what a well-behaved one answers, and an answer of the wrong type."""

    install: Callable[[pausetls.Context, Callable[..., Any]], None]
    healthy: Callable[[tuple[Any, ...]], Any]
    wrong: Any


HOOKS = {
    "verify": Hook(lambda ctx, cb: ctx.set_verify(MUTUAL, cb), lambda args: bool(args[-1]), "accept"),
    "servername": Hook(lambda ctx, cb: ctx.set_tlsext_servername_callback(cb), lambda args: None, "localhost"),
    "client_hello": Hook(lambda ctx, cb: ctx.set_client_hello_callback(cb), lambda args: None, "go on"),
    "certificate": Hook(lambda ctx, cb: ctx.set_certificate_callback(cb), lambda args: None, 1.0),
    "alpn_select": Hook(lambda ctx, cb: ctx.set_alpn_select_callback(cb), lambda args: b"http/1.1", "http/1.1"),
    "ocsp_server": Hook(lambda ctx, cb: ctx.set_ocsp_server_callback(cb), lambda args: b"", "no response"),
}


def _raise(driver: str) -> Any:
    raise ValueError("backend exploded")


def _fail_after_a_pause(driver: str) -> Any:
    return later(driver, error=ValueError("backend exploded"))


def _hang(driver: str) -> Any:
    return never(driver)  # cut short by the callback (or session cache) timeout


# what the fault returns (or raises), and the exception the server's log line must name with the callback
FAULTS: dict[str, tuple[Callable[[str], Any] | None, str]] = {
    "raises": (_raise, "ValueError: backend exploded"),
    "fails-after-a-pause": (_fail_after_a_pause, "ValueError: backend exploded"),
    # gevent and asyncio cut the callback; a thread cannot be cut, so its wait for the result times out
    "hangs": (_hang, rf"TimeoutError: (pause )?timed out after {CALLBACK_TIMEOUT} s"),
    "wrong-type": (None, "TypeError"),
    "re-enters": (None, "ConnectionBusyError"),
}


def faulty(hook: Hook, fault: str, armed: list[bool], driver: str) -> Callable[..., Any]:
    """A callback that pauses, then answers like *hook*'s healthy one, except while ``armed[0]``: then it
    misbehaves as *fault* says."""

    def callback(conn: pausetls.TLSSocket, *args: Any) -> Any:
        if not armed[0]:
            return later(driver, hook.healthy(args))
        if fault == "wrong-type":
            return hook.wrong
        if fault == "re-enters":
            conn.do_handshake()  # the connection is inside OpenSSL already: ConnectionBusyError
        misbehave, _ = FAULTS[fault]
        assert misbehave is not None
        return misbehave(driver)

    return callback


def s_client(peers: PeerGroup, openssl: str, pki: PKI, client_cert: Issued, port: int) -> Any:
    """An s_client that sends a client certificate, SNI, ALPN and an OCSP status request."""
    argv = s_client_argv(openssl, pki, port, "-servername", "localhost", "-alpn", "h2,http/1.1", "-status")
    return peers.process([*argv, "-nocommands", *client_cert_args(client_cert, pki)])


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", HOOKS)
def test_a_faulty_callback_fails_its_handshake_closed_and_names_itself(
    name: str,
    fault: str,
    pki: PKI,
    server_cert: Issued,
    client_cert: Issued,
    driver: str,
    start: Any,
    watch: Watch,
    openssl: str,
    peers: PeerGroup,
) -> None:
    armed = [True]
    ctx = make_server_context(server_cert)
    ctx.load_verify_locations(pki.ca_path)
    ctx.set_callback_timeout(CALLBACK_TIMEOUT)
    HOOKS[name].install(ctx, faulty(HOOKS[name], fault, armed, driver))
    server = start(ctx)
    since = watch.mark(server)
    hostile = s_client(peers, openssl, pki, client_cert, server.server_port)
    hostile.offer(b"ping\n")
    hostile.wait()
    assert b"ping" not in hostile.stdout.data, hostile.describe()  # nothing came back: the handshake failed
    line = watch.one_failure(server, since, "callback_errors")
    assert re.search(f"{name} callback raised {FAULTS[fault][1]}", line), line

    armed[0] = False  # the same hook, behaving: the server was not wedged
    ctx.set_callback_timeout(GENEROUS)  # its pause must not race the fault's short limit on a loaded machine
    healthy = s_client(peers, openssl, pki, client_cert, server.server_port)
    healthy.write(b"ping\n")
    healthy.wait_output(b"ping\n")
    healthy.close_stdin()
    assert healthy.wait() == 0, healthy.describe()
    assert server.stats.handshakes_completed == 1 and server.stats.handshakes_failed == 1


# -- session get: a fault is a miss ---------------------------------------------------


SESSION_GET_FAULTS: dict[str, tuple[Callable[[str], Any], str]] = {
    # what get does, and the cache counter that records it
    "raises": (_raise, "store_errors"),
    "fails-after-a-pause": (_fail_after_a_pause, "store_errors"),
    "hangs": (_hang, "timeouts"),
    "wrong-type": (lambda driver: later(driver, "a session"), "rejected"),
}


@pytest.mark.parametrize("fault", SESSION_GET_FAULTS)
def test_a_faulty_session_get_callback_gives_a_full_handshake(
    fault: str, pki: PKI, server_cert: Issued, driver: str, start: Any, watch: Watch, tls_version: int
) -> None:
    """get pauses (an ``async def`` under asyncio) and resumes the session; while faulty, a full handshake."""
    saved: dict[bytes, bytes] = {}
    armed = [False]
    misbehave, counter = SESSION_GET_FAULTS[fault]

    def get(session_id: bytes) -> Any:
        return misbehave(driver) if armed[0] else later(driver, saved.get(session_id))

    def new(session_id: bytes, der: bytes) -> Any:
        saved[session_id] = der
        return later(driver)  # a write that pauses too, outside the handshake

    ctx = make_server_context(server_cert, tls_version)
    # short only while the fault is armed: a healthy pause must not race it on a loaded machine
    cache = ctx.set_session_callbacks(get=get, new=new, timeout=GENEROUS)
    server = start(ctx)
    client = stdlib_client_context(pki, version=tls_version, cooperative=True)
    session, _, _ = connect_once(server.server_port, client)
    assert wait_until(lambda: cache.stats.stored == 1)  # the pausing new was waited for
    armed[0] = True
    cache.timeout = CALLBACK_TIMEOUT
    before = getattr(cache.stats, counter)
    started = time.monotonic()
    assert connect_once(server.server_port, client, session)[1:] == (False, b"x")  # a full handshake
    assert time.monotonic() - started < GENEROUS  # at the lookup's timeout, not when the hang would end
    assert getattr(cache.stats, counter) == before + 1
    armed[0] = False
    cache.timeout = GENEROUS
    assert connect_once(server.server_port, client, session)[1:] == (True, b"x")  # the cache works again
    assert server.stats.handshakes_failed == 0 and watch.lines() == []


# -- pausing where OpenSSL may hold a lock ------------------------------------------


def test_a_pausable_callback_nested_in_a_non_pausable_hook_cannot_pause() -> None:
    """No user callback runs in a non-pausable hook today (session remove copies the id and acts later),
    so this is the job runtime's guard on its own (`tests/core/test_job.py` has the direct case): a pausable
    callback called from inside a non-pausable one cannot pause either, and the error names the hook."""

    def wait() -> Any:
        return pausetls.pause(Event(), 1)

    def body() -> Any:
        return job.run_callback("session_remove", False, lambda: job.run_callback("verify", True, wait))

    job = Job(body)
    job.run_inline(lambda waitable, timeout: pytest.fail("paused where it must not"))
    assert isinstance(job.exception, pausetls.PauseError), job.exception
    assert "the session_remove callback must not pause" in str(job.exception)
