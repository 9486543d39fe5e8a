"""The WSGI app of tests/servers/test_gunicorn.py: what the worker and the TLS connection saw, as JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    context = environ["pausetls.connection"].get_context()
    cache = context.session_cache
    seen = {key: value for key, value in environ.items() if key == "HTTPS" or key.startswith("SSL_")}
    seen.update(
        pid=os.getpid(),
        url_scheme=environ["wsgi.url_scheme"],
        verify_paused_together=context.get_app_data(),
        sessions_stored=None if cache is None else cache.stats.stored,
    )
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
