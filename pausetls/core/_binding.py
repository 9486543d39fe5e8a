"""The compiled binding and the OpenSSL error queue helpers built on it.

OpenSSL's error queue is per *thread*; greenlets share it.  Every call into
OpenSSL clears it first, and a callback that may pause takes the queue out
(`drain_error_queue`) before it runs user code and puts it back
(`restore_error_queue`) before returning to OpenSSL, so a paused handshake's
errors never leak into, or get eaten by, another connection's call.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

try:
    from ._openssl import ffi, lib
except ModuleNotFoundError as missing:
    if missing.name != f"{__package__}._openssl":
        raise
    # a source checkout imported before its extension was compiled: say what to do, in one sentence
    raise ImportError(
        f"pausetls is not built: {os.path.dirname(__file__)} has no compiled OpenSSL "
        "binding (_openssl*.so); run 'pip install .' or 'python setup.py build_ext --inplace' in the checkout"
    ) from None

__all__ = ["ffi", "lib", "ErrorEntry", "drain_error_queue", "restore_error_queue", "openssl_version"]


class ErrorEntry(NamedTuple):
    """One entry of OpenSSL's error queue, copied out of it."""

    code: int
    file: Any  # const char * into OpenSSL's static strings: kept as the pointer, never copied
    line: int
    func: Any
    data: bytes
    library: str
    reason: str

    def describe(self) -> str:
        text = f"{self.library}: {self.reason}"
        if self.data:
            text += f" ({self.data.decode('utf-8', 'replace')})"
        return text


def _c_string(ptr: Any) -> str:
    return "" if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", "replace")


_new_batch = ffi.new_allocator(should_clear_after_alloc=False)


def drain_error_queue() -> list[ErrorEntry]:
    """Take every entry off this thread's error queue, oldest first.

    One C call copies the queue into an array of this call's own (cffi releases the GIL around
    it, so shared out-parameters would be overwritten by another thread's drain).
    """
    if not lib.ERR_peek_error():
        return []  # the usual case (a close_notify's shutdown, a callback with nothing queued): no batch made
    entries: list[ErrorEntry] = []
    batch = _new_batch("pausetls_err_entry[]", lib.PAUSETLS_ERR_BATCH)
    while True:
        count = lib.pausetls_err_drain(batch, lib.PAUSETLS_ERR_BATCH)
        entries.extend(_entry(batch[i]) for i in range(count))
        if count < lib.PAUSETLS_ERR_BATCH:
            return entries


def _entry(raw: Any) -> ErrorEntry:
    return ErrorEntry(
        int(raw.code),
        raw.file,
        int(raw.line),
        raw.func,
        ffi.string(raw.data),
        _c_string(raw.library) or "unknown library",
        _c_string(raw.reason) or f"reason({lib.ERR_GET_REASON(raw.code)})",
    )


def restore_error_queue(entries: list[ErrorEntry]) -> None:
    """Put entries taken by `drain_error_queue` back, in the same order."""
    for entry in entries:
        lib.pausetls_err_restore(entry.code, entry.file, entry.line, entry.func, entry.data)


def openssl_version() -> str:
    """The version string of the OpenSSL this build links."""
    return _c_string(lib.OpenSSL_version(lib.OPENSSL_VERSION))
