"""`GeventWorker`: gunicorn's gevent worker with pausetls handshakes: ``gunicorn -k pausetls.gunicorn.GeventWorker``.

It is gunicorn's own ``gunicorn.workers.ggevent.GeventWorker`` (its HTTP parser, keep-alive,
``--max-requests``, graceful stop, access log) with one change: each listening socket is served by a
`TLSServer` instead of gevent's ``StreamServer`` over stdlib ``ssl``, so the handshake runs in the
connection's greenlet and its callbacks may pause.  A failed handshake is one log line (in gunicorn's
error log) and a counter, and never reaches the worker.  The WSGI environ carries mod_ssl's variables
and ``pausetls.connection``, as under `pausetls.WSGIServer`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import gevent
from gevent.pool import Pool
from gunicorn.workers import ggevent

from ..core.mod_ssl_environ import mod_ssl_environ
from ..core.tls_socket import TLSSocket
from .gevent import TLSServer
from .gunicorn_config import HOOK_NAME, check_tls_settings, context_from_config, install_hook_setting
from .wsgi_handler import CONNECTION_KEY

__all__ = ["GeventWorker"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class GeventWorker(ggevent.GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker serving HTTPS through pausetls (see the module's docstring)."""

    #: seconds to wait for each handshake, callback pauses included (TLSServer's own default)
    handshake_timeout: float = 30.0
    wsgi: WSGIApp  # gunicorn's base worker sets it in load_wsgi

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """Called by gunicorn's arbiter before it forks: a wrong TLS setting stops it with one sentence."""
        install_hook_setting(cfg)
        check_tls_settings(cfg)

    def init_process(self) -> None:
        # pausetls's log lines (a failed handshake, ...) go where gunicorn's error log goes
        pausetls_log = logging.getLogger("pausetls")
        error_log = self.log.error_log
        pausetls_log.handlers = list(error_log.handlers)
        pausetls_log.setLevel(error_log.level)
        pausetls_log.propagate = False
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = _with_tls_environ(self.wsgi)

    def run(self) -> None:
        context = context_from_config(self.cfg)
        self.cfg.settings[HOOK_NAME].get()(self, context)
        servers = []
        for listener in self.sockets:
            listener.setblocking(1)
            server = TLSServer(
                listener,
                partial(self.handle, listener),
                context=context,
                handshake_timeout=self.handshake_timeout,
                spawn=Pool(self.worker_connections),
            )
            if self.cfg.workers > 1:
                server.max_accept = 1  # as gunicorn's: leave the next client to another worker
            server.start()
            servers.append(server)
        while self.alive:
            self.notify()
            gevent.sleep(1.0)
        self._stop(servers)

    def _stop(self, servers: list[TLSServer]) -> None:
        """As gunicorn's gevent worker: stop accepting, give requests ``graceful_timeout``, then end them."""
        for server in servers:
            server.close()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() <= deadline:
            if all(server.pool.free_count() == server.pool.size for server in servers):
                return
            self.notify()
            gevent.sleep(1.0)
        self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
        for server in servers:
            server.stop(timeout=1)


def _with_tls_environ(app: WSGIApp) -> WSGIApp:
    """*app* with mod_ssl's variables and ``pausetls.connection`` in its environ (gunicorn puts the
    connection in ``environ["gunicorn.socket"]``)."""

    def tls_environ_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        connection = environ.get("gunicorn.socket")
        if isinstance(connection, TLSSocket):
            environ.update(mod_ssl_environ(connection))
            environ[CONNECTION_KEY] = connection
        return app(environ, start_response)

    return tls_environ_app
