"""`WSGIHandler`: gevent.pywsgi's request handler over a TLS connection.

Each request's environ carries mod_ssl's variables (`pausetls.core.mod_ssl_environ`) and the
connection itself as ``environ["pausetls.connection"]``.

The response head goes out in the same TLS record as the first body write: pywsgi sends them with
two ``sendall`` calls, which over TLS would be two records (and two packets, with TCP_NODELAY).

While `TLSServer.stop` gives established connections their grace period, a
keep-alive client may still send requests.  They are answered, with
``Connection: close``, and the connection ends after that response, so the
client knows to reconnect (to another worker or server) instead of losing its
next request to the close at the end of the grace period.
"""

from __future__ import annotations

from typing import Any

from gevent import pywsgi

from ..core.mod_ssl_environ import mod_ssl_environ
from ..core.tls_socket import TLSSocket

__all__ = ["WSGIHandler", "CONNECTION_KEY"]

CONNECTION_KEY = "pausetls.connection"
RECORD_PAYLOAD = 16384  # the most plaintext one TLS record carries (2**14, RFC 8446 5.1)


class WSGIHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
    """The handler `pausetls.WSGIServer` uses; derive your own ``handler_class`` from it."""

    def _stopping(self) -> bool:
        return bool(self.server.closed)  # closed: stop() has begun (the listener is gone)

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self._stopping():  # pywsgi closes the connection after a response that says so
            headers = [(name, value) for name, value in headers if name.lower() != "connection"]
            headers.append(("Connection", "close"))
        return super().start_response(status, headers, exc_info)

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        if isinstance(self.socket, TLSSocket):  # pywsgi's handler keeps the connection as self.socket
            environ.update(mod_ssl_environ(self.socket))
            environ[CONNECTION_KEY] = self.socket
        return environ

    def _write_with_headers(self, data: Any) -> None:
        """pywsgi's head and first write (framed by pywsgi) in one TLS record: the head with as much of
        the body as fills the record; the rest of a large body follows without being copied.

        Later writes go out as they come, so a streamed (chunked) response still flows chunk by chunk.
        """
        parts: list[Any] = []
        self._sendall = parts.append  # pywsgi sends through self._sendall; collect instead
        try:
            super()._write_with_headers(data)
        finally:
            del self._sendall  # the class's own again
        head, *rest = parts  # pywsgi's head, then the framed body (none for an empty write)
        body = memoryview(rest[0] if len(rest) == 1 else b"".join(rest))
        fill = max(0, RECORD_PAYLOAD - len(head))
        self._sendall(head + body[:fill])
        if len(body) > fill:
            self._sendall(body[fill:])

    def handle_one_request(self) -> Any:
        result = super().handle_one_request()
        if result is True and self._stopping():  # its response began before the stop: read no more
            return None
        return result
