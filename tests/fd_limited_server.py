"""A TLS echo server in a child process, so a test can lower its descriptor limit: `test_descriptors`.

``python fd_limited_server.py threads|gevent|asyncio CHAIN KEY`` prints ``port N``, then answers each
command on stdin with one line on stdout, the command's name and its answer:

- ``limit N``: the soft RLIMIT_NOFILE leaves N descriptors free; answers ``limit F``, how many
  are (F >= N: numbers below the highest open one may be free too)
- ``fds``: ``fds N``, the descriptors open
- ``stats``: ``stats {json}``, the server's counters
- ``quit``: stops the server, answers ``quit``

The server logs to stderr, which the test reads for tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pausetls


def echo(tls: pausetls.TLSSocket, address: Any) -> None:
    while data := tls.recv(65536):
        tls.sendall(data)


def descriptors() -> tuple[int, int]:
    """(how many are open, the highest number that may be open)."""
    numbers = [int(name) for name in os.listdir("/proc/self/fd")]
    return len(numbers) - 1, max(numbers)  # listdir's own descriptor was among them (closed by now)


def leave_free(count: int) -> int:
    """Lower the soft limit so that at least *count* descriptors can still be opened; how many can."""
    open_now, highest = descriptors()
    limit = highest + 1 + count
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return limit - open_now


def answer(server: Any, command: str) -> str:
    name, _, argument = command.partition(" ")
    if name == "limit":
        return f"limit {leave_free(int(argument))}"
    if name == "fds":
        return f"fds {descriptors()[0]}"
    if name == "stats":
        return f"stats {json.dumps(server.stats.as_dict())}"
    raise ValueError(f"unknown command {command!r}")


def blocking_lines() -> Iterator[str]:
    yield from sys.stdin


def cooperative_lines() -> Iterator[str]:
    """stdin lines read through gevent's hub, so the server's greenlets go on meanwhile."""
    import gevent.os

    gevent.os.make_nonblocking(0)
    pending = b""
    while chunk := gevent.os.nb_read(0, 4096):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line.decode()


async def asyncio_main(ctx: pausetls.Context) -> None:
    """The same commands against a `pausetls.asyncio` server; stdin is read on the loop."""
    import asyncio

    import pausetls.asyncio

    async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await pausetls.asyncio.start_server(echo_stream, "127.0.0.1", 0, context=ctx)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := (await stdin.readline()).decode().strip():
        if line == "quit":
            break
        print(answer(server, line), flush=True)
    server.close()
    server.close_clients()
    async with asyncio.timeout(5):
        await server.wait_closed()
    print("quit", flush=True)


def main(driver: str, chain: str, key: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(chain)
    ctx.use_privatekey_file(key)
    if driver == "asyncio":
        import asyncio

        asyncio.run(asyncio_main(ctx))
        return
    server_class = pausetls.ThreadedTLSServer if driver == "threads" else pausetls.TLSServer
    lines: Callable[[], Iterator[str]] = blocking_lines if driver == "threads" else cooperative_lines
    server = server_class(("127.0.0.1", 0), echo, context=ctx)
    server.start()
    print(f"port {server.server_port}", flush=True)
    for line in lines():
        if line.strip() == "quit":
            break
        print(answer(server, line.strip()), flush=True)
    server.stop(timeout=1)
    print("quit", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
