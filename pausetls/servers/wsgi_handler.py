"""`WSGIHandler`: gevent.pywsgi's request handler, ending keep-alive connections once the server stops.

While `TLSServer.stop` gives established connections their grace period, a
keep-alive client may still send requests.  They are answered, with
``Connection: close``, and the connection ends after that response, so the
client knows to reconnect (to another worker or server) instead of losing its
next request to the close at the end of the grace period.
"""

from __future__ import annotations

from typing import Any

from gevent import pywsgi

__all__ = ["WSGIHandler"]


class WSGIHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
    """The handler `pausetls.WSGIServer` uses; derive your own ``handler_class`` from it."""

    def _stopping(self) -> bool:
        return bool(self.server.closed)  # closed: stop() has begun (the listener is gone)

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self._stopping():  # pywsgi closes the connection after a response that says so
            headers = [(name, value) for name, value in headers if name.lower() != "connection"]
            headers.append(("Connection", "close"))
        return super().start_response(status, headers, exc_info)

    def handle_one_request(self) -> Any:
        result = super().handle_one_request()
        if result is True and self._stopping():  # its response began before the stop: read no more
            return None
        return result
