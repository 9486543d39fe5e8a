"""What a client offered, read from its ClientHello (for ``Context.set_client_hello_callback``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._binding import ffi, lib

__all__ = ["ClientHello", "read_client_hello"]

_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_EXT_SUPPORTED_VERSIONS = 43


@dataclass(frozen=True)
class ClientHello:
    """The parts of a ClientHello a server decides on."""

    server_name: str | None
    alpn_protocols: list[bytes]
    cipher_suites: list[str] = field(repr=False)
    versions: list[int]
    legacy_version: int
    extensions: list[int] = field(repr=False)


def _extension(ssl: Any, ext_type: int) -> bytes | None:
    data, length = ffi.new("const unsigned char **"), ffi.new("size_t *")
    if not lib.SSL_client_hello_get0_ext(ssl, ext_type, data, length):
        return None
    return bytes(ffi.buffer(data[0], length[0]))


def _server_name(ext: bytes | None) -> str | None:
    # ServerNameList: u16 length, then entries of u8 type, u16 length, name (RFC 6066 section 3)
    if ext is None or len(ext) < 5 or ext[2] != 0:
        return None
    length = int.from_bytes(ext[3:5], "big")
    return ext[5 : 5 + length].decode("ascii", "replace")


def _length_prefixed(body: bytes) -> list[bytes]:
    items = []
    while body:
        items.append(body[1 : 1 + body[0]])
        body = body[1 + body[0] :]
    return items


def _versions(ext: bytes | None) -> list[int]:
    if not ext:
        return []
    body = ext[1 : 1 + ext[0]]
    return [int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body) - 1, 2)]


def _cipher_suites(ssl: Any) -> list[str]:
    data = ffi.new("const unsigned char **")
    length = lib.SSL_client_hello_get0_ciphers(ssl, data)
    names = []
    for i in range(0, length - 1, 2):
        cipher = lib.SSL_CIPHER_find(ssl, data[0] + i)
        if cipher == ffi.NULL:
            names.append(f"0x{data[0][i]:02X}{data[0][i + 1]:02X}")
        else:
            names.append(ffi.string(lib.SSL_CIPHER_get_name(cipher)).decode())
    return names


def _extensions(ssl: Any) -> list[int]:
    out, length = ffi.new("int **"), ffi.new("size_t *")
    if not lib.SSL_client_hello_get1_extensions_present(ssl, out, length):
        return []
    try:
        return [out[0][i] for i in range(length[0])]
    finally:
        lib.OPENSSL_free(out[0])


def read_client_hello(ssl: Any) -> ClientHello:
    """Parse the ClientHello OpenSSL is processing (valid only inside the client hello callback)."""
    alpn = _extension(ssl, _EXT_ALPN)
    return ClientHello(
        server_name=_server_name(_extension(ssl, _EXT_SERVER_NAME)),
        alpn_protocols=_length_prefixed(alpn[2:]) if alpn and len(alpn) >= 2 else [],
        cipher_suites=_cipher_suites(ssl),
        versions=_versions(_extension(ssl, _EXT_SUPPORTED_VERSIONS)),
        legacy_version=int(lib.SSL_client_hello_get0_legacy_version(ssl)),
        extensions=_extensions(ssl),
    )
