"""Sealing sessions for a shared store: AES-256-GCM with key ids, and the store key.

A serialized ``SSL_SESSION`` holds the master secret, so nothing leaves the
process in clear: each blob is ``MAGIC | key id | nonce | ciphertext+tag``,
authenticated together with the store key it is filed under (so a blob cannot
be moved to another session id or session id context).  Keys rotate by adding
a new current key; older keys keep opening the sessions they sealed until
they are retired.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .key_file import new_key, read_key_file

__all__ = ["SealError", "SessionSealer", "store_key"]

_MAGIC = b"PTS1"
_NONCE_BYTES = 12
_HEADER = len(_MAGIC) + 1 + _NONCE_BYTES


def store_key(namespace: str, sid_ctx: bytes, session_id: bytes) -> str:
    """The store key of a session: a digest of (session id context, session id)."""
    digest = hashlib.sha256(bytes([len(sid_ctx)]) + sid_ctx + session_id).hexdigest()
    return f"{namespace}:{digest}"


class SealError(ValueError):
    """A blob that is not ours: garbage, tampered, sealed with an unknown key, or filed elsewhere."""


class SessionSealer:
    """Seals and opens session blobs with AES-256-GCM keys identified by a number 0-255."""

    def __init__(self, keys: Mapping[int, bytes], current: int | None = None) -> None:
        if not keys:
            raise ValueError("give at least one key")
        self._aeads: dict[int, AESGCM] = {}
        for key_id, key in keys.items():
            self.add_key(key_id, key)
        self.current = max(keys) if current is None else current
        if self.current not in self._aeads:
            raise ValueError(f"current key id {self.current} is not among the keys")

    @classmethod
    def generate(cls) -> SessionSealer:
        """A sealer with one random key: fine for one process, not for a fleet."""
        return cls({1: AESGCM.generate_key(bit_length=256)})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SessionSealer:
        """Keys from a `pausetls keys` file (`pausetls.sessions.key_file`); the last line is the current key."""
        keys = read_key_file(path)
        return cls({key.id: key.secret for key in keys}, keys[-1].id)

    @staticmethod
    def new_key_line(key_id: int) -> str:
        """A line for a key file: a fresh random key made now (``pausetls keys new FILE`` writes a whole file)."""
        return new_key(key_id).line()

    def add_key(self, key_id: int, key: bytes) -> None:
        if not 0 <= key_id <= 255:
            raise ValueError("key ids are 0-255")
        if len(key) != 32:
            raise ValueError("keys are 32 bytes (AES-256)")
        self._aeads[key_id] = AESGCM(key)

    def rotate(self, key_id: int, key: bytes) -> None:
        """Seal with this new key from now on; older keys still open what they sealed."""
        self.add_key(key_id, key)
        self.current = key_id

    def retire(self, key_id: int) -> None:
        """Stop opening blobs sealed with *key_id* (they become misses)."""
        if key_id == self.current:
            raise ValueError("cannot retire the current key: rotate first")
        self._aeads.pop(key_id, None)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        header = _MAGIC + bytes([self.current]) + nonce
        return header + self._aeads[self.current].encrypt(nonce, plaintext, header + associated)

    def open(self, blob: bytes, associated: bytes) -> bytes:
        if not isinstance(blob, bytes) or len(blob) < _HEADER + 16 or not blob.startswith(_MAGIC):
            raise SealError("not a sealed session")
        aead = self._aeads.get(blob[len(_MAGIC)])
        if aead is None:
            raise SealError(f"sealed with unknown key id {blob[len(_MAGIC)]}")
        nonce = blob[len(_MAGIC) + 1 : _HEADER]
        try:
            return aead.decrypt(nonce, blob[_HEADER:], blob[:_HEADER] + associated)
        except InvalidTag:
            raise SealError("tampered, or filed under another session") from None
