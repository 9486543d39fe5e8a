"""The key file shared by a fleet: what `SessionSealer` seals sessions with and `TicketKeys` derives ticket keys from.

Format (text, one key a line; blank lines and ``#`` comments are ignored)::

    ID:HEX[:CREATED]

* ``ID`` is 0-255, unique in the file (a sealed session carries it in one byte);
* ``HEX`` is 64 hex digits: 32 random bytes;
* ``CREATED`` is when the key was made, in whole seconds since the epoch (UTC);
  files written before it existed have none, and their keys have no age.

The **last line is the current key**: it seals new sessions and encrypts new
tickets; the lines above it only open and decrypt what they made.  ``pausetls
keys rotate`` appends a new current key whose id follows the current one
(wrapping after 255, skipping ids in use).  Files are written atomically (a
temporary file renamed over the old one) with mode 0600: they decrypt every
session the fleet made.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["FileKey", "KeyFileError", "read_key_file", "write_key_file", "new_key", "rotated", "format_keys"]

KEY_BYTES = 32
MAX_ID = 255


class KeyFileError(ValueError):
    """A key file that cannot be read or written as asked; the message names the file (and line)."""


@dataclass(frozen=True)
class FileKey:
    """One line of a key file.  ``secret`` never appears in a repr."""

    id: int
    secret: bytes = field(repr=False)
    created: int | None = None  # seconds since the epoch; None in files of the older format

    def age(self, now: float | None = None) -> float | None:
        """Seconds since the key was made, or None when the file does not say."""
        if self.created is None:
            return None
        return (time.time() if now is None else now) - self.created

    def line(self) -> str:
        created = "" if self.created is None else f":{self.created}"
        return f"{self.id}:{self.secret.hex()}{created}"


def new_key(key_id: int, now: float | None = None) -> FileKey:
    """A fresh random key with this id, made now."""
    _check_id(key_id)
    return FileKey(key_id, secrets.token_bytes(KEY_BYTES), int(time.time() if now is None else now))


def rotated(keys: Sequence[FileKey], now: float | None = None) -> list[FileKey]:
    """*keys* plus a new current key, whose id is the next free one after the current key's."""
    used = {key.id for key in keys}
    start = keys[-1].id if keys else 0
    for step in range(1, MAX_ID + 2):
        candidate = (start + step) % (MAX_ID + 1)
        if candidate not in used:
            return [*keys, new_key(candidate, now)]
    raise KeyFileError(f"all {MAX_ID + 1} key ids are in use: remove the oldest lines first")


def read_key_file(path: str | os.PathLike[str]) -> list[FileKey]:
    """The keys of *path* in file order (the last is current); `KeyFileError` for anything malformed."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except FileNotFoundError:
        raise KeyFileError(f"no such file: {os.fspath(path)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read key file {os.fspath(path)}: {exc}") from None
    keys: list[FileKey] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key = _parse_line(line, f"{os.fspath(path)}:{number}")
        if any(other.id == key.id for other in keys):
            raise KeyFileError(f"{os.fspath(path)}:{number}: key id {key.id} appears twice")
        keys.append(key)
    if not keys:
        raise KeyFileError(f"{os.fspath(path)}: no keys (make one with: pausetls keys new FILE)")
    return keys


def _parse_line(line: str, where: str) -> FileKey:
    # the message never quotes the line: it holds the key
    parts = line.split(":")
    expected = f"{where}: expected ID:HEX[:CREATED] (id 0-{MAX_ID}, {2 * KEY_BYTES} hex digits, seconds)"
    if len(parts) not in (2, 3):
        raise KeyFileError(expected)
    try:
        key_id = int(parts[0])
        secret = bytes.fromhex(parts[1])
        created = int(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise KeyFileError(expected) from None
    if not 0 <= key_id <= MAX_ID or len(secret) != KEY_BYTES or (created is not None and created < 0):
        raise KeyFileError(expected)
    return FileKey(key_id, secret, created)


def format_keys(keys: Sequence[FileKey]) -> str:
    header = "# pausetls key file: ID:HEX:CREATED, the last line is the current key (see: pausetls keys --help)\n"
    return header + "".join(key.line() + "\n" for key in keys)


def write_key_file(path: str | os.PathLike[str], keys: Sequence[FileKey], *, replace: bool) -> None:
    """Write *keys* to *path* atomically with mode 0600; *replace* False refuses an existing file."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, temporary = tempfile.mkstemp(prefix=".pausetls-keys-", dir=directory)  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(format_keys(keys))
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)  # fails if the file exists, even when another process just made it
    except FileExistsError:
        raise KeyFileError(f"{target} exists: not overwriting it (use: pausetls keys rotate {target})") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {target}: {exc}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _check_id(key_id: int) -> None:
    if not 0 <= key_id <= MAX_ID:
        raise KeyFileError(f"key ids are 0-{MAX_ID}, not {key_id}")
