"""The page ``pausetls serve`` answers with: what each client's TLS connection negotiated."""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable
from typing import Any, TypedDict
from urllib.parse import parse_qs

from ..core.tls_socket import TLSSocket
from .wsgi_handler import WSGIHandler

__all__ = ["TLSInfoHandler", "TLSDetails", "tls_details", "application", "ENVIRON_KEY"]

StartResponse = Callable[..., Any]
WSGIEnviron = dict[str, Any]
ENVIRON_KEY = "pausetls.tls"


class TLSDetails(TypedDict):
    """What `TLSInfoHandler` puts in ``environ["pausetls.tls"]``."""

    version: str
    cipher: str
    resumed: bool
    alpn: str | None
    client_subject: str | None
    server_pid: int


def tls_details(tls: TLSSocket) -> TLSDetails:
    cipher = tls.cipher()
    return {
        "version": tls.version() or "unknown",
        "cipher": cipher[0] if cipher else "unknown",
        "resumed": tls.session_reused,
        "alpn": tls.selected_alpn_protocol(),
        "client_subject": _client_subject(tls),
        "server_pid": os.getpid(),  # which worker answered (pausetls serve --workers N)
    }


def _client_subject(tls: TLSSocket) -> str | None:
    cert = tls.get_peer_certificate()
    return None if cert is None else cert.to_cryptography().subject.rfc4514_string()


class TLSInfoHandler(WSGIHandler):
    """pywsgi's handler, adding the connection's `TLSDetails` to each request as ``environ["pausetls.tls"]``."""

    def get_environ(self) -> WSGIEnviron:
        environ: WSGIEnviron = super().get_environ()
        if isinstance(self.socket, TLSSocket):  # pywsgi's handler keeps the connection as self.socket
            environ[ENVIRON_KEY] = tls_details(self.socket)
        return environ


def application(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    """Answer every path with the TLS details of the request's connection."""
    rows = _rows(environ.get(ENVIRON_KEY))
    if _wants_text(environ):
        body, content_type = _text_page(rows), "text/plain; charset=utf-8"
    else:
        body, content_type = _html_page(rows), "text/html; charset=utf-8"
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    start_response("200 OK", headers)
    return [body]


def _rows(details: TLSDetails | None) -> list[tuple[str, str]]:
    if details is None:
        return [("TLS", "none (not a pausetls connection)")]
    return [
        ("TLS version", details["version"]),
        ("Cipher", details["cipher"]),
        ("Session resumed", "yes" if details["resumed"] else "no"),
        ("ALPN", details["alpn"] or "none"),
        ("Client certificate", details["client_subject"] or "none"),
        ("Server process", str(details["server_pid"])),
    ]


def _wants_text(environ: WSGIEnviron) -> bool:
    """``?format=text`` (or ``html``) decides; else plain text if Accept names text/plain but not text/html."""
    query: str = environ.get("QUERY_STRING", "")
    chosen = parse_qs(query).get("format", [""])[-1].lower()
    if chosen in ("text", "html"):
        return chosen == "text"
    accept: str = environ.get("HTTP_ACCEPT", "")
    accepted = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "text/plain" in accepted and "text/html" not in accepted


def _text_page(rows: list[tuple[str, str]]) -> bytes:
    width = max(len(label) for label, _ in rows) + 1
    return "".join(f"{label + ':':<{width}} {value}\n" for label, value in rows).encode()


def _html_page(rows: list[tuple[str, str]]) -> bytes:
    cells = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>\n" for label, value in rows)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>pausetls</title></head>\n'
        f"<body><h1>Your TLS connection</h1>\n<table>\n{cells}</table></body></html>\n"
    ).encode()
