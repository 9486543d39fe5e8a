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
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event

from ..core._binding import openssl_version
from ..core.constants import TLS1_2_VERSION, TLS1_3_VERSION, TLS_SERVER_METHOD, VERIFY_FAIL_IF_NO_PEER_CERT, VERIFY_PEER
from ..core.context import Context
from ..core.errors import Error
from ..core.tls_socket import TLSSocket
from ..servers.gevent import WSGIServer
from ..servers.info_page import TLSInfoHandler, application
from ..servers.prefork import run_workers
from ..sessions.sealing import SessionSealer
from ..sessions.stores import store_from_url
from ..sessions.tickets import TicketKeys
from ._selfsigned import SELF_SIGNED_NAMES, self_signed_files
from .bench_command import add_bench_parser
from .guidance import check_files, warn_at_start
from .keys_command import add_keys_parser

__all__ = ["main", "build_parser", "server_context"]

log = logging.getLogger("pausetls.cli")

StartResponse = Callable[..., Any]
WSGIEnviron = dict[str, Any]

TLS_MIN_VERSIONS = {"1.2": TLS1_2_VERSION, "1.3": TLS1_3_VERSION}
STOP_TIMEOUT = 2.0  # default seconds established connections get to finish when the server stops
WORKER_EXIT_MARGIN = 10.0  # beyond --stop-timeout, before the supervisor kills a worker still stopping


# -- command line -------------------------------------------------------------


def _int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer from *low* to *high*."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be {low}-{high}, not {text!r}")
        return value

    return parse


_port = _int_in(0, 65535, "port")
_workers = _int_in(1, 256, "workers")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _session_id_context(text: str) -> bytes:
    value = text.encode("utf-8")
    if not 0 < len(value) <= 32:
        raise argparse.ArgumentTypeError(f"must be 1-32 bytes, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pausetls", description="Tools for pausetls, TLS for gevent servers.")
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve_parser(commands)
    add_bench_parser(commands)
    add_keys_parser(commands)
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
    serve.add_argument(
        "--session-store",
        metavar="URL",
        default="memory://",
        help="Where TLS sessions are kept for resumption: memory:// (this process), memcached://HOST:PORT "
        "or redis://HOST:PORT/DB (shared by workers and machines) (default: %(default)s).",
    )
    serve.add_argument(
        "--session-key-file",
        metavar="FILE",
        help="Key file sealing the sessions in the store (AES-256-GCM), made with 'pausetls keys new FILE' "
        "(format: 'pausetls keys --help'); the last key seals, all open. Servers sharing a store need the "
        "same file; without it a key is made at start.",
    )
    serve.add_argument(
        "--ticket-key-file",
        metavar="FILE",
        help="Issue stateless session tickets (TLS 1.2 and 1.3) under keys derived from this key file "
        "(made with 'pausetls keys new FILE'); servers given the same file resume each other's tickets. "
        "SIGHUP reloads it (after 'pausetls keys rotate FILE'). Without it, TLS 1.3 resumes through "
        "--session-store.",
    )
    serve.add_argument(
        "--ticket-key-max-age",
        type=_seconds,
        metavar="SECONDS",
        help="Tickets under a key older than this (that no longer encrypts) give full handshakes "
        "(default: kept until removed from the file).",
    )
    serve.add_argument(
        "--session-timeout",
        type=_seconds,
        default=0.5,
        metavar="SECONDS",
        help="Longest a handshake waits on the session store before a full handshake (default: %(default)s).",
    )
    serve.add_argument(
        "--session-id-context",
        type=_session_id_context,
        metavar="TEXT",
        help="Resume sessions made by any server with this same TEXT (1-32 bytes), even if its --cafile or "
        "--require-client-cert differ; client certificates are still verified against this server's "
        "--cafile. By default a digest of the client-certificate policy, so only servers with the same "
        "policy share sessions.",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="Processes serving the one listening socket; they share sessions through a memcached or Redis "
        "--session-store (memory:// is each worker's own) (default: 1).",
    )
    serve.add_argument(
        "--stop-timeout",
        type=_seconds,
        default=STOP_TIMEOUT,
        metavar="SECONDS",
        help="After SIGINT or SIGTERM, seconds in-flight requests get to finish; requests arriving meanwhile "
        "on keep-alive connections are answered with 'Connection: close' (default: %(default)s).",
    )
    serve.add_argument(
        "--keylog",
        metavar="FILE",
        help="Append the TLS secrets of every connection to FILE (NSS key log format, for Wireshark); "
        "anyone who can read FILE can decrypt the traffic: for debugging only.",
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
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_extra_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra_arguments = extra
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
            check_files(args)
            context = _server_context(args, cleanup)
            _install_session_cache(args, context)
            if args.keylog is not None:
                context.keylog_filename = args.keylog
            _install_ticket_keys(args, context)
            listener = WSGIServer.get_listener((args.host, args.port), family=_family(args.host))
        except (Error, OSError, ValueError, ImportError) as exc:  # ImportError: a store's client library
            print(f"pausetls: error: {exc}", file=sys.stderr)
            return 1
        warn_at_start(args)
        port = listener.getsockname()[1]
        print(f"pausetls: serving https://{_url_host(args.host)}:{port}/ (OpenSSL {_openssl_release()})", flush=True)
        if args.workers > 1:
            return run_workers(
                args.workers,
                lambda number, ready: _serve_on(listener, context, args, f"worker {number}", ready),
                stop_timeout=args.stop_timeout + WORKER_EXIT_MARGIN,
            )
        return _serve_on(listener, context, args, "")


def _serve_on(
    listener: Any, context: Context, args: argparse.Namespace, name: str, ready: Callable[[], None] = lambda: None
) -> int:
    """Serve on *listener* until SIGINT or SIGTERM; *ready* is called once serving and stoppable."""
    server = WSGIServer(
        listener,
        application,
        context=context,
        handshake_timeout=args.handshake_timeout,
        handler_class=TLSInfoHandler,
    )
    server.start()
    _run_until_signalled(
        server,
        args.stop_timeout,
        lambda: _print_counters(server, name, "running"),
        lambda: _reload_keys(context),
        ready,
    )
    _print_counters(server, name, "stopped")
    return 0


def _print_counters(server: WSGIServer, name: str, state: str) -> None:
    counters: dict[str, Any] = dict(server.stats.as_dict())
    cache = server.context.session_cache
    if cache is not None:
        counters["sessions"] = cache.stats.as_dict()
    if server.context.ticket_keys is not None:
        counters["tickets"] = server.context.ticket_keys.stats.as_dict()
    who = f" {name}" if name else ""
    print(f"pausetls{who}: {state}; counters: {json.dumps(counters)}", flush=True)


def _install_session_cache(args: argparse.Namespace, context: Context) -> None:
    """The server's session cache: the store named by --session-store, sealed with --session-key-file
    (or with a key made now, which pre-forked workers share)."""
    store = store_from_url(args.session_store, timeout=args.session_timeout)
    sealer = SessionSealer.from_file(args.session_key_file) if args.session_key_file else SessionSealer.generate()
    context.set_session_cache(store, timeout=args.session_timeout, sealer=sealer)
    if args.session_id_context is not None:
        context.set_session_id(args.session_id_context)


def _install_ticket_keys(args: argparse.Namespace, context: Context) -> None:
    if args.ticket_key_file:
        context.set_ticket_keys(TicketKeys.from_file(args.ticket_key_file, max_age=args.ticket_key_max_age))


def _reload_keys(context: Context) -> None:
    """SIGHUP: read the ticket key file again; a file that does not load leaves the keys in use."""
    keys = context.ticket_keys
    if not isinstance(keys, TicketKeys) or keys.path is None:
        log.info("SIGHUP: no --ticket-key-file to reload")
        return
    try:
        keys.reload()
    except (OSError, ValueError) as exc:
        log.warning("SIGHUP: %s; the ticket keys in use stay", exc)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


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
    """HTTP/1.1 is all this server speaks (a client offering only other protocols goes on without ALPN)."""
    return b"http/1.1" if b"http/1.1" in offered else None


def _run_until_signalled(
    server: WSGIServer,
    stop_timeout: float,
    report: Callable[[], None],
    reload: Callable[[], None],
    ready: Callable[[], None],
) -> None:
    """Serve until SIGINT or SIGTERM (the signal's greenlet stops the server, giving connections
    *stop_timeout* seconds); SIGUSR1 calls *report*, SIGHUP *reload*; *ready* once the handlers are in place."""
    stopped = Event()

    def stop(signum: int) -> None:
        if server.closed:  # a second signal while stopping
            return
        log.info("%s: stopping", signal.Signals(signum).name)
        server.stop(timeout=stop_timeout)
        stopped.set()

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    handlers = [gevent.signal_handler(signum, stop, signum) for signum in previous]
    handlers.append(gevent.signal_handler(signal.SIGUSR1, report))
    handlers.append(gevent.signal_handler(signal.SIGHUP, reload))
    ready()
    try:
        stopped.wait()
    finally:
        for handler in handlers:
            handler.cancel()
        for signum, action in previous.items():
            signal.signal(signum, action)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def version_line() -> str:
    """``pausetls 0.1.0 (OpenSSL 3.0.13 30 Jan 2024)``: this pausetls and the OpenSSL it is linked against."""
    from .. import __version__

    return f"pausetls {__version__} ({openssl_version()})"


def _openssl_release() -> str:
    """``3.0.13`` out of ``OpenSSL 3.0.13 30 Jan 2024``."""
    match = re.search(r"\d+\.\d+\.\d+\w*", openssl_version())
    return match.group(0) if match else openssl_version()
