"""Shared fixtures: a PKI, server and client contexts, a running TLSServer, leak checks."""

from __future__ import annotations

import gc
import os
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.ssl
import greenlet
import pytest
from hypothesis import settings

import pausetls

from drivers import driver, start  # noqa: F401 - fixtures: the hook suites run under every driver
from gates import GENEROUS
from health import watch  # noqa: F401 - fixture for every test module
from peers import openssl, peers  # noqa: F401 - fixtures for every test module
from pki import PKI, Issued
from servers import memcached_server, redis_server, require_binary  # noqa: F401 - fixtures, re-export

# CI runs the property tests on a fixed set of examples, so a landing never depends on luck;
# a developer's run explores new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

TLS_VERSIONS = [pausetls.TLS1_2_VERSION, pausetls.TLS1_3_VERSION]
STDLIB_VERSIONS = {pausetls.TLS1_2_VERSION: ssl.TLSVersion.TLSv1_2, pausetls.TLS1_3_VERSION: ssl.TLSVersion.TLSv1_3}


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A second, untrusted PKI."""
    return PKI(tmp_path_factory.mktemp("other-pki"), name="untrusted")


@pytest.fixture(scope="session")
def server_cert(pki: PKI) -> Issued:
    return pki.issue("localhost")


@pytest.fixture(scope="session")
def client_cert(pki: PKI) -> Issued:
    return pki.issue("client one", server=False)


@pytest.fixture(scope="session")
def untrusted_client_cert(other_pki: PKI) -> Issued:
    return other_pki.issue("intruder", server=False)


@pytest.fixture(params=TLS_VERSIONS, ids=["TLSv1.2", "TLSv1.3"])
def tls_version(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def make_server_context(server_cert: Issued, version: int | None = None) -> pausetls.Context:
    ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(server_cert.chain_path)
    ctx.use_privatekey_file(server_cert.key_path)
    if version is not None:
        ctx.set_min_proto_version(version)
        ctx.set_max_proto_version(version)
    return ctx


def stdlib_client_context(
    pki: PKI, client: Issued | None = None, version: int | None = None, *, cooperative: bool = False
) -> ssl.SSLContext:
    """A CPython ``ssl`` client context trusting *pki*; ``cooperative`` makes it gevent's subclass."""
    ctx = (gevent.ssl.SSLContext if cooperative else ssl.SSLContext)(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.ca_path))
    if client is not None:
        ctx.load_cert_chain(str(client.chain_path), str(client.key_path))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = STDLIB_VERSIONS[version]
    return ctx


def echo_handler(tls: pausetls.TLSSocket, address: Any) -> None:
    """Echo lines until the client closes."""
    while True:
        data = tls.recv(65536)
        if not data:
            return
        tls.sendall(data)


@pytest.fixture
def start_server() -> Iterator[Callable[..., Any]]:
    """Start TLSServers (or *server_class*, e.g. ThreadedTLSServer) on a free loopback port; stopped at teardown."""
    servers: list[Any] = []

    def start_one(
        context: pausetls.Context,
        handle: Callable[..., Any] = echo_handler,
        *,
        server_class: type[Any] = pausetls.TLSServer,
        **kwargs: Any,
    ) -> Any:
        server = server_class(("127.0.0.1", 0), handle, context=context, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start_one
    for server in servers:
        server.stop(timeout=1)


def live_greenlets() -> list[greenlet.greenlet]:
    hub = gevent.get_hub()
    return [
        g
        for g in gc.get_objects()
        if isinstance(g, greenlet.greenlet)
        and not g.dead
        and g.parent is hub
        and type(g).__name__ != "ThreadPoolWorker"
    ]


def wait_until(predicate: Callable[[], bool], timeout: float = GENEROUS) -> bool:
    """Wait for *predicate* to hold: returns as soon as it does, so a generous ceiling costs nothing."""
    with gevent.Timeout(timeout, False):
        while not predicate():
            gevent.sleep(0.01)
    return predicate()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test ends with no live SSL object, TLS socket, job or extra greenlet."""
    before_greenlets = len(live_greenlets())
    yield

    def settled() -> bool:
        gc.collect()
        counts = pausetls.live_objects()
        return counts["ssl"] == 0 and counts["tls_sockets"] == 0 and counts["jobs"] == 0

    assert wait_until(settled), f"objects left behind: {pausetls.live_objects()}"
    assert wait_until(lambda: len(live_greenlets()) <= before_greenlets), f"greenlets left behind: {live_greenlets()}"
