"""gevent's server signature: ``ssl_context=`` and ``**ssl_args`` turned into a pausetls `Context`.

``StreamServer(listener, handle, certfile=..., keyfile=...)`` is how gevent
users write a TLS server; gevent passes the ``ssl_args`` to
``gevent.ssl.wrap_socket`` for every connection, which builds an
``SSLContext`` from them (``gevent/_ssl3.py``: ``keyfile`` defaults to
``certfile``, a server needs ``certfile``, ``cert_reqs`` is the verify mode,
``ca_certs`` the trusted CAs, ``ciphers`` the cipher list).  Here the same
arguments build one server `Context` at construction, so a mistake (a missing
file, a bad cipher string) fails there, not at the first client.

The servers share this one function: `TLSServer`, `WSGIServer` and
`ThreadedTLSServer`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from ..core.constants import (
    TLS1_2_VERSION,
    TLS_SERVER_METHOD,
    VERIFY_FAIL_IF_NO_PEER_CERT,
    VERIFY_NONE,
    VERIFY_PEER,
)
from ..core.context import Context

__all__ = ["SSL_ARGS", "TLSOptions", "server_context"]

SSL_ARGS = frozenset(
    {
        "certfile",
        "keyfile",
        "ca_certs",
        "cert_reqs",
        "ciphers",
        "ssl_version",
        "server_side",
        "do_handshake_on_connect",
        "suppress_ragged_eofs",
    }
)
"""The keyword arguments gevent's ``StreamServer`` forwards to ``wrap_socket``."""

_VERIFY_MODES = {
    ssl.CERT_NONE: VERIFY_NONE,
    ssl.CERT_OPTIONAL: VERIFY_PEER,
    ssl.CERT_REQUIRED: VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT,
}
# what gevent's default (PROTOCOL_SSLv23, now PROTOCOL_TLS) and a server's own constant mean: any version
# pausetls allows; anything else named a single old version, which pausetls does not speak
_ANY_VERSION = {int(ssl.PROTOCOL_TLS), int(ssl.PROTOCOL_TLS_SERVER)}


@dataclass(frozen=True)
class TLSOptions:
    """What the servers do per connection, from gevent's ``ssl_args``."""

    do_handshake_on_connect: bool = True
    suppress_ragged_eofs: bool = True


def server_context(server: str, context: Any, ssl_context: Any, ssl_args: dict[str, Any]) -> tuple[Context, TLSOptions]:
    """The server's `Context` (given as *context* or *ssl_context*, or built from *ssl_args*) and options.

    Raises `TypeError` for a stdlib ``ssl.SSLContext``, an unknown argument or no certificate at all,
    and `ValueError` for values gevent would refuse too.
    """
    unknown = set(ssl_args) - SSL_ARGS
    if unknown:
        raise TypeError(f"{server}() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    if context is not None and ssl_context is not None:
        raise TypeError(f"{server}: give context= or ssl_context=, not both")
    given = context if context is not None else ssl_context
    options = TLSOptions(
        do_handshake_on_connect=bool(ssl_args.pop("do_handshake_on_connect", True)),
        suppress_ragged_eofs=bool(ssl_args.pop("suppress_ragged_eofs", True)),
    )
    if not ssl_args.pop("server_side", True):
        raise ValueError(f"{server} is a server: server_side=False makes no sense here")
    if given is not None:
        _check_context(server, given)
        if ssl_args:
            raise TypeError(
                f"{server}: {', '.join(sorted(ssl_args))} would be ignored with a Context; "
                "set them on the Context (use_certificate_chain_file, load_verify_locations, set_verify...)"
            )
        return given, options
    if not ssl_args.get("certfile"):
        raise TypeError(
            f"{server} needs a server certificate: certfile= (and keyfile=), or context=pausetls.Context(...)"
        )
    return _context_from_ssl_args(ssl_args), options


def _check_context(server: str, context: Any) -> None:
    if isinstance(context, ssl.SSLContext):
        raise TypeError(
            f"{server} takes a pausetls.Context, not a stdlib ssl.SSLContext (its callbacks cannot pause): "
            "pass certfile=/keyfile= (and ca_certs=, cert_reqs=, ciphers=) as to gevent's StreamServer, "
            "or build ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD) with ctx.use_certificate_chain_file(...) "
            "and ctx.use_privatekey_file(...) and pass context=ctx"
        )
    if not isinstance(context, Context):
        raise TypeError(f"{server}: context must be a pausetls.Context, not {type(context).__name__}")


def _context_from_ssl_args(ssl_args: dict[str, Any]) -> Context:
    """What ``gevent.ssl.SSLSocket.__init__`` builds from the same arguments, as a pausetls `Context`."""
    certfile = ssl_args["certfile"]
    keyfile = ssl_args.get("keyfile") or certfile  # gevent: the key may sit in the certificate file
    version = ssl_args.get("ssl_version")
    if version is not None and int(version) not in _ANY_VERSION:
        raise ValueError(
            f"ssl_version={version!r}: pausetls speaks TLS 1.2 and 1.3 only; "
            "leave it out, or set_min_proto_version on a Context"
        )
    cert_reqs = ssl_args.get("cert_reqs", ssl.CERT_NONE)
    if cert_reqs not in _VERIFY_MODES:
        raise ValueError(f"cert_reqs must be ssl.CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED, not {cert_reqs!r}")
    if cert_reqs != ssl.CERT_NONE and not ssl_args.get("ca_certs"):
        raise ValueError("cert_reqs asks for client certificates: give ca_certs= (the CAs that issue them)")
    context = Context(TLS_SERVER_METHOD)
    context.set_min_proto_version(TLS1_2_VERSION)
    context.use_certificate_chain_file(certfile)
    context.use_privatekey_file(keyfile)
    context.check_privatekey()
    if ssl_args.get("ca_certs"):
        context.load_verify_locations(ssl_args["ca_certs"])
    context.set_verify(_VERIFY_MODES[cert_reqs])
    if ssl_args.get("ciphers"):
        context.set_cipher_list(ssl_args["ciphers"])
    return context
