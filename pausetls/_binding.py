"""The compiled binding and the OpenSSL error queue helpers built on it.

OpenSSL's error queue is per *thread*; greenlets share it.  Every call into
OpenSSL clears it first, and a callback that may pause takes the queue out
(`drain_error_queue`) before it runs user code and puts it back
(`restore_error_queue`) before returning to OpenSSL, so a paused handshake's
errors never leak into, or get eaten by, another connection's call.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._openssl import ffi, lib

__all__ = ["ffi", "lib", "ErrorEntry", "drain_error_queue", "restore_error_queue", "openssl_version"]


class ErrorEntry(NamedTuple):
    """One entry of OpenSSL's error queue, as ERR_get_error_all reports it."""

    code: int
    file: Any  # const char * into OpenSSL's static strings: kept as the pointer, never copied
    line: int
    func: Any
    data: bytes

    @property
    def library(self) -> str:
        return _c_string(lib.ERR_lib_error_string(self.code)) or "unknown library"

    @property
    def reason(self) -> str:
        reason = _c_string(lib.ERR_reason_error_string(self.code))
        return reason or f"reason({lib.ERR_GET_REASON(self.code)})"

    def describe(self) -> str:
        text = f"{self.library}: {self.reason}"
        if self.data:
            text += f" ({self.data.decode('utf-8', 'replace')})"
        return text


def _c_string(ptr: Any) -> str:
    return "" if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", "replace")


_file = ffi.new("const char **")
_line = ffi.new("int *")
_func = ffi.new("const char **")
_data = ffi.new("const char **")
_flags = ffi.new("int *")


def drain_error_queue() -> list[ErrorEntry]:
    """Take every entry off this thread's error queue, oldest first."""
    entries: list[ErrorEntry] = []
    while True:
        code = lib.ERR_get_error_all(_file, _line, _func, _data, _flags)
        if code == 0:
            return entries
        data = b"" if _data[0] == ffi.NULL else ffi.string(_data[0])
        entries.append(ErrorEntry(code, _file[0], _line[0], _func[0], data))


def restore_error_queue(entries: list[ErrorEntry]) -> None:
    """Put entries taken by `drain_error_queue` back, in the same order."""
    for entry in entries:
        lib.pausetls_err_restore(entry.code, entry.file, entry.line, entry.func, entry.data)


def openssl_version() -> str:
    """The version string of the OpenSSL this build links."""
    return _c_string(lib.OpenSSL_version(lib.OPENSSL_VERSION))
