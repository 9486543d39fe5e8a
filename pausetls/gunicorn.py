"""Public path of the gunicorn worker: ``gunicorn -k pausetls.gunicorn.GeventWorker``; the implementation
is `pausetls.servers.gunicorn_worker` (and its settings, `pausetls.servers.gunicorn_config`)."""

from __future__ import annotations

from .servers.gunicorn_config import PausetlsContext
from .servers.gunicorn_worker import GeventWorker

__all__ = ["GeventWorker", "PausetlsContext"]
