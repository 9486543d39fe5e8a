"""The gunicorn config file of tests/servers/test_gunicorn.py: a ``pausetls_context`` hook that
installs a pausing verify callback and, if the test names one, a shared session store.

Environment: PAUSETLS_TEST_TOGETHER (handshakes whose verify callbacks must be paused at once before
any goes on, default 1), PAUSETLS_TEST_STORE and PAUSETLS_TEST_KEYS (a store URL and a key file).
"""

from __future__ import annotations

import os
from typing import Any

import pausetls
from pausetls.sealing import SessionSealer
from pausetls.stores import store_from_url

from gates import Gate


def pausetls_context(worker: Any, context: pausetls.Context) -> None:
    gate = Gate(int(os.environ.get("PAUSETLS_TEST_TOGETHER", "1")))
    paused: list[int] = []
    context.set_app_data({"paused": paused, "worker": worker})  # for the app

    def verify(conn: pausetls.TLSSocket, x509: Any, errnum: int, depth: int, ok: int) -> bool:
        if depth == 0:
            gate.arrive()  # a gevent wait inside OpenSSL's callback: this handshake pauses here
            paused.append(gate.most_inside)
        return bool(ok)

    context.set_verify(pausetls.VERIFY_PEER | pausetls.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
    if store := os.environ.get("PAUSETLS_TEST_STORE"):
        context.set_session_cache(
            store_from_url(store), sealer=SessionSealer.from_file(os.environ["PAUSETLS_TEST_KEYS"])
        )
