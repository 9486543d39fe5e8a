"""The WSGI app of tests/servers/test_gunicorn.py: what the worker and the TLS connection saw, as JSON."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent

GENEROUS = 60.0


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    context = environ["pausetls.connection"].get_context()
    if environ["PATH_INFO"] == "/until-stopping":
        return until_stopping(context.get_app_data()["worker"], start_response)
    cache = context.session_cache
    seen = {key: value for key, value in environ.items() if key == "HTTPS" or key.startswith("SSL_")}
    seen.update(
        pid=os.getpid(),
        url_scheme=environ["wsgi.url_scheme"],
        verify_paused_together=context.get_app_data()["paused"],
        sessions_stored=None if cache is None else cache.stats.stored,
    )
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def until_stopping(worker: Any, start_response: Callable[..., Any]) -> Iterator[bytes]:
    """A response still being written when gunicorn is told to stop: it ends once the worker stops."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"started\n"
    deadline = time.monotonic() + GENEROUS
    while worker.alive and time.monotonic() < deadline:
        gevent.sleep(0.01)
    yield b"finished\n" if not worker.alive else b"never told to stop\n"
