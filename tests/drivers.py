"""One server API per driver, for the hook suite that runs under gevent, threads and asyncio alike.

`DRIVERS` names them; ``server_class(driver)`` is what the ``start_server`` fixture starts:
`pausetls.TLSServer`, `pausetls.ThreadedTLSServer`, or `AsyncioThreadServer` (a `pausetls.asyncio`
server on its own event loop in an OS thread, with the same ``server_port``/``stats``/``stop`` face).
A hook pauses the way its driver pauses: `later` gives the pending result each one waits for (a
gevent ``AsyncResult``, a ``concurrent.futures.Future``, a coroutine).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import gevent
import pytest
from asyncio_support import echo
from gevent.event import AsyncResult

import pausetls
import pausetls.asyncio as pasyncio

from gates import GENEROUS

DRIVERS = ["gevent", "threads", "asyncio"]


class AsyncioThreadServer:
    """A `pausetls.asyncio` echo server on a loop of its own in a thread; *handle* must be None or echo."""

    def __init__(self, listener: tuple[str, int], handle: Any = None, *, context: pausetls.Context, **kwargs: Any):
        self._listener = listener
        self._context = context
        self._kwargs = kwargs
        self._ready = threading.Event()
        self._server: pasyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="asyncio-server", daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        host, port = self._listener
        self._server = await pasyncio.start_server(echo, host, port, context=self._context, **self._kwargs)
        self._ready.set()
        await self._stopping.wait()
        self._server.close()
        self._server.close_clients()
        async with asyncio.timeout(GENEROUS):
            await self._server.wait_closed()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(GENEROUS):
            raise RuntimeError("the asyncio server did not start")

    @property
    def server_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def stats(self) -> pausetls.ServerStats:
        assert self._server is not None
        return self._server.stats

    def stop(self, timeout: float | None = None) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        with gevent.Timeout(GENEROUS, RuntimeError("the asyncio server thread did not end")):
            while self._thread.is_alive():
                gevent.sleep(0.01)


def server_class(driver: str) -> type[Any]:
    return {"gevent": pausetls.TLSServer, "threads": pausetls.ThreadedTLSServer, "asyncio": AsyncioThreadServer}[driver]


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    """Each driver in turn; a test narrows the list with ``@pytest.mark.parametrize("driver", [...])``."""
    return str(request.param)


@pytest.fixture
def start(start_server: Any, driver: str) -> Any:
    """``start(ctx, **options)``: an echo server of this test's driver, stopped at teardown."""
    return lambda ctx, **options: start_server(ctx, server_class=server_class(driver), **options)


def later(driver: str, value: Any = None, *, error: BaseException | None = None, delay: float = 0.05) -> Any:
    """A result the hook returns pending: *value* (or *error* raised) after *delay*, the way *driver* waits."""
    if driver == "gevent":
        result = AsyncResult()
        gevent.spawn_later(delay, result.set_exception if error else result.set, error or value)
        return result
    if driver == "threads":
        future: Future[Any] = Future()
        timer = threading.Timer(delay, future.set_exception if error else future.set_result, (error or value,))
        timer.daemon = True
        timer.start()
        return future

    async def pause() -> Any:
        await asyncio.sleep(delay)
        if error is not None:
            raise error
        return value

    return pause()


def after_pause(driver: str, then: Callable[[], Any], delay: float = 0.05) -> Any:
    """What a callback written for *driver* does: wait *delay* (``gevent.sleep``, ``time.sleep``, or
    ``await asyncio.sleep`` in the coroutine it returns), then carry on with ``then()`` (its value or error)."""
    if driver == "gevent":
        gevent.sleep(delay)
        return then()
    if driver == "threads":
        time.sleep(delay)
        return then()

    async def carry_on() -> Any:
        await asyncio.sleep(delay)
        return then()

    return carry_on()


def never(driver: str) -> Any:
    """A result that never comes: a callback or handshake time limit has to cut the pause."""
    if driver == "gevent":
        return AsyncResult()
    if driver == "threads":
        return Future()
    return asyncio.Event().wait()
