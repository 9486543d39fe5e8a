"""An OpenSSL object that outlives its Python owner keeps no handle to it.

`SSL_CTX` and `SSL` carry a cffi handle to their `Context`/`TLSSocket` (ex_data), through which
every callback finds its Python side.  OpenSSL may keep either alive longer than the owner: a
connection holds its context, and when both become garbage at once the cycle collector frees them
in any order, so `SSL_free` may call the remove-session callback after the Context's handle is
gone.  A dead handle must never be dereferenced: the owner clears it when it is finalized.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable
from typing import Any

import pausetls
from pausetls.core import _live
from pausetls.core._binding import ffi, lib
from pausetls.drivers.threads import thread_driver

from conftest import make_server_context
from pki import Issued


def _raw(cdata: Any, ctype: str) -> Any:
    """The same pointer without the owner's destructor attached."""
    return ffi.cast(ctype, int(ffi.cast("uintptr_t", cdata)))


def _handle_left(owner: list[Any], raw: Any, get_ex_data: Callable[[Any, int], Any]) -> Any:
    """What *raw*'s ex_data holds once its owner (the list's only item, taken out here) is collected; only
    the cycle collector can free it, as in a server's teardown."""
    assert get_ex_data(raw, 0) != ffi.NULL
    item = owner.pop()
    item.cycle = item
    del item
    gc.collect()
    return get_ex_data(raw, 0)


def test_an_ssl_ctx_outliving_its_context_has_no_handle_left(server_cert: Issued) -> None:
    owner = [make_server_context(server_cert)]
    raw = _raw(owner[0]._ctx, "SSL_CTX *")
    assert lib.SSL_CTX_up_ref(raw) == 1  # what a connection's SSL does
    try:
        assert _handle_left(owner, raw, lib.SSL_CTX_get_ex_data) == ffi.NULL
    finally:
        lib.SSL_CTX_free(raw)


def test_an_ssl_outliving_its_connection_has_no_handle_left(server_cert: Issued) -> None:
    a, b = socket.socketpair()
    owner = [pausetls.TLSSocket(make_server_context(server_cert), a, server_side=True, driver=thread_driver)]
    raw = _raw(owner[0]._ssl, "SSL *")
    assert lib.SSL_up_ref(raw) == 1
    try:
        assert _handle_left(owner, raw, lib.SSL_get_ex_data) == ffi.NULL
    finally:
        lib.SSL_free(raw)
        _live.release("tls_sockets")  # abandoned on purpose: it was never closed, which is what counts it
        a.close()
        b.close()
