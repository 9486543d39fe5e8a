"""`ContextHooks`: the user callbacks of one `Context`, the one record the OpenSSL callbacks read.

`Context`'s setters write it; ``_callbacks`` reads it (``context.hooks.servername``)
instead of reaching into the Context's private attributes, so neither module
needs the other's internals.
"""

from __future__ import annotations

from typing import Any

from ._keylog import KeyLogHook

__all__ = ["ContextHooks", "PAUSABLE_HOOKS"]

PAUSABLE_HOOKS = ("verify", "alpn_select", "servername", "client_hello", "certificate", "ocsp_server", "ocsp_client")
"""The hook names: each is an attribute of `ContextHooks` and the callback's name in errors."""


class ContextHooks:
    """None where no callback is set.  ``callback_timeout`` bounds each pausable callback."""

    __slots__ = (*PAUSABLE_HOOKS, "callback_timeout", "ocsp_data", "keylog")

    def __init__(self) -> None:
        self.verify: Any = None
        self.alpn_select: Any = None
        self.servername: Any = None
        self.client_hello: Any = None
        self.certificate: Any = None
        self.ocsp_server: Any = None
        self.ocsp_client: Any = None
        self.ocsp_data: Any = None
        self.callback_timeout: float | None = None
        self.keylog = KeyLogHook()  # never pauses: `pausetls.core._keylog`
