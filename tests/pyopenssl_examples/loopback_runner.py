"""Run a ported example script with ``bind(("", port))`` kept on loopback: ``python loopback_runner.py SCRIPT ARGS...``.

pyOpenSSL's ``server.py`` binds every interface; tests listen on 127.0.0.1
only, so this harness (not the script) narrows the wildcard before running
the script unchanged as ``__main__``.
"""

from __future__ import annotations

import runpy
import socket
import sys
from typing import Any

_bind = socket.socket.bind


def _bind_loopback(self: socket.socket, address: Any) -> None:
    if isinstance(address, tuple) and address[0] == "":
        address = ("127.0.0.1", *address[1:])
    _bind(self, address)


if __name__ == "__main__":
    socket.socket.bind = _bind_loopback  # type: ignore[method-assign]
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
