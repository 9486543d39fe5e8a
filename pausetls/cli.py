"""``pausetls serve``: a small HTTPS server that shows each client what its TLS connection negotiated.

Run ``pausetls serve --help`` (or ``python -m pausetls serve --help``).
Without ``--cert``/``--key`` it makes a throwaway self-signed certificate;
Ctrl-C or SIGTERM stops it and prints the server's counters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event

from ._binding import openssl_version
from ._selfsigned import SELF_SIGNED_NAMES, self_signed_files
from .constants import TLS1_2_VERSION, TLS1_3_VERSION, TLS_SERVER_METHOD, VERIFY_FAIL_IF_NO_PEER_CERT, VERIFY_PEER
from .context import Context
from .errors import Error
from .info_page import TLSInfoHandler, application
from .server import WSGIServer
from .tls_socket import TLSSocket

__all__ = ["main", "build_parser", "server_context"]

log = logging.getLogger("pausetls.cli")

StartResponse = Callable[..., Any]
WSGIEnviron = dict[str, Any]

TLS_MIN_VERSIONS = {"1.2": TLS1_2_VERSION, "1.3": TLS1_3_VERSION}
STOP_TIMEOUT = 2.0  # seconds established connections get to finish when the server stops


# -- command line -------------------------------------------------------------


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {text!r}")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pausetls", description="Tools for pausetls, TLS for gevent servers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve_parser(commands)
    return parser


def _add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve HTTPS pages that show each client its TLS connection",
        description="Serve HTTPS: every path answers with the TLS version, cipher, session resumption, ALPN "
        "and client certificate of the request's connection (HTML, or text with ?format=text or "
        "Accept: text/plain). Ctrl-C or SIGTERM stops the server and prints its counters.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: %(default)s).")
    serve.add_argument(
        "--port", type=_port, default=8443, help="TCP port to listen on; 0 picks a free one (default: %(default)s)."
    )
    serve.add_argument(
        "--cert",
        metavar="FILE",
        help="PEM file with the server certificate followed by its intermediates; without --cert and --key "
        f"a throwaway self-signed certificate for {', '.join(SELF_SIGNED_NAMES)} is generated.",
    )
    serve.add_argument("--key", metavar="FILE", help="PEM file with the private key of --cert.")
    serve.add_argument(
        "--cafile",
        metavar="FILE",
        help="PEM file of CA certificates trusted for client certificates; clients are asked for a "
        "certificate, which stays optional unless --require-client-cert is given.",
    )
    serve.add_argument(
        "--require-client-cert",
        action="store_true",
        help="Refuse clients without a certificate signed by a CA in --cafile (needs --cafile).",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="Seconds a client has to complete its TLS handshake (default: %(default)s).",
    )
    serve.add_argument(
        "--tls-min",
        choices=sorted(TLS_MIN_VERSIONS),
        default="1.2",
        help="Oldest TLS version accepted (default: %(default)s).",
    )
    serve.set_defaults(run=_serve, subparser=serve)


def _check_serve_args(args: argparse.Namespace) -> str | None:
    """The error message for an invalid combination of options, or None."""
    if (args.cert is None) != (args.key is None):
        return "--cert and --key go together: give both (or neither, for a throwaway self-signed certificate)"
    if args.require_client_cert and args.cafile is None:
        return "--require-client-cert needs --cafile (the CA certificates client certificates must chain to)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pausetls`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


# -- the server ---------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    problem = _check_serve_args(args)
    if problem is not None:
        args.subparser.error(problem)  # exits with status 2
    logging.basicConfig(level=logging.INFO, format="pausetls: %(message)s")
    with contextlib.ExitStack() as cleanup:  # removes the throwaway certificate's directory
        try:
            server = _start_server(args, _server_context(args, cleanup))
        except (Error, OSError) as exc:
            print(f"pausetls: error: {exc}", file=sys.stderr)
            return 1
        print(f"pausetls: serving https://{_url_host(args.host)}:{server.server_port}/ (OpenSSL {_openssl_release()})")
        sys.stdout.flush()
        _run_until_signalled(server)
    print(f"pausetls: stopped; counters: {json.dumps(server.stats.as_dict())}", flush=True)
    return 0


def _server_context(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> Context:
    cert, key = (Path(args.cert), Path(args.key)) if args.cert else self_signed_files(cleanup)
    return server_context(
        cert, key, cafile=args.cafile, require_client_cert=args.require_client_cert, tls_min=args.tls_min
    )


def server_context(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str],
    *,
    cafile: str | os.PathLike[str] | None = None,
    require_client_cert: bool = False,
    tls_min: str = "1.2",
) -> Context:
    """The server Context ``serve`` uses: *cert* chain and *key*, HTTP/1.1 ALPN, optional client certificates.

    With *cafile*, clients are asked for a certificate chaining to it (required if *require_client_cert*).
    """
    if require_client_cert and cafile is None:
        raise ValueError("require_client_cert needs a cafile")
    context = Context(TLS_SERVER_METHOD)
    context.use_certificate_chain_file(cert)
    context.use_privatekey_file(key)
    context.check_privatekey()
    context.set_min_proto_version(TLS_MIN_VERSIONS[tls_min])
    context.set_alpn_select_callback(_select_alpn)
    if cafile is not None:
        context.load_verify_locations(cafile)
        context.set_verify(VERIFY_PEER | (VERIFY_FAIL_IF_NO_PEER_CERT if require_client_cert else 0))
    return context


def _select_alpn(conn: TLSSocket, offered: list[bytes]) -> bytes | None:
    """HTTP/1.1 is all this server speaks (a client offering only other protocols gets an alert)."""
    return b"http/1.1" if b"http/1.1" in offered else None


def _start_server(args: argparse.Namespace, context: Context) -> WSGIServer:
    server = WSGIServer(
        (args.host, args.port),
        application,
        context=context,
        handshake_timeout=args.handshake_timeout,
        handler_class=TLSInfoHandler,
    )
    server.start()
    return server


def _run_until_signalled(server: WSGIServer) -> None:
    """Serve until SIGINT or SIGTERM; the signal's greenlet stops the server."""
    stopped = Event()

    def stop(signum: int) -> None:
        if server.closed:  # a second signal while stopping
            return
        log.info("%s: stopping", signal.Signals(signum).name)
        server.stop(timeout=STOP_TIMEOUT)
        stopped.set()

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    handlers = [gevent.signal_handler(signum, stop, signum) for signum in previous]
    try:
        stopped.wait()
    finally:
        for handler in handlers:
            handler.cancel()
        for signum, action in previous.items():
            signal.signal(signum, action)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _openssl_release() -> str:
    """``3.0.13`` out of ``OpenSSL 3.0.13 30 Jan 2024``."""
    match = re.search(r"\d+\.\d+\.\d+\w*", openssl_version())
    return match.group(0) if match else openssl_version()
