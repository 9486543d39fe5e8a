"""Paths handed to OpenSSL: a missing file is named as such before OpenSSL reads it.

OpenSSL reports a missing file as "system library: reason(2)" (errno 2, without the
path); users should read "no such file: PATH".  Unreadable files (permissions, a
directory) still reach OpenSSL, whose queue then explains them.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import MissingFileError

__all__ = ["checked_file"]


def checked_file(path: str | bytes | os.PathLike[Any], what: str, *, must_exist: bool = True) -> bytes:
    """*path* as bytes for OpenSSL; `MissingFileError` if *must_exist* and it does not exist
    (if not *must_exist*: when its directory does not)."""
    raw = os.fsencode(path)
    probe = raw if must_exist else (os.path.dirname(raw) or b".")
    if not os.path.exists(probe):
        raise MissingFileError(os.fsdecode(probe), what)
    return raw
