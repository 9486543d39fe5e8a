"""Running asyncio tests on the default loop and on uvloop, against pausetls.asyncio servers."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import pausetls.asyncio as pasyncio

from gates import GENEROUS

LOOPS = ["asyncio", "uvloop"]

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


@pytest.fixture(name="run", params=LOOPS)
def run_fixture(request: pytest.FixtureRequest) -> Iterator[Run]:
    """``run(coroutine)``: run it to completion on a fresh loop of each kind (bounded by `GENEROUS`)."""
    with asyncio.Runner(loop_factory=_loop_factory(request.param)) as runner:

        def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
            async def bounded() -> Any:
                async with asyncio.timeout(GENEROUS * 2):
                    return await coroutine

            return runner.run(bounded())

        yield run


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until the client closes."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def ping(port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost") -> bytes:
    """A stdlib asyncio TLS client: handshake, send b"ping", read the answer (b"" when closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_hostname)
    try:
        writer.write(b"ping")
        await writer.drain()
        return await reader.read(100)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


async def outcome(port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost") -> bytes | str:
    """What a stdlib client got: the answer, or the name of the error it saw."""
    try:
        return await ping(port, ctx, server_hostname)
    except (OSError, ssl.SSLError) as exc:
        return type(exc).__name__


def port_of(server: pasyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])
