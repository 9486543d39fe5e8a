"""The crypto floor: what ``openssl speed`` says the public-key operations of one handshake cost.

A full TLS 1.3 handshake costs the server one signature (its CertificateVerify)
and two X25519 operations (key generation and derivation); a client
certificate adds two signature verifications (the client's leaf and its
intermediate); a resumed handshake (psk_dhe_ke) keeps only the X25519 pair.
Measured on one core with nothing else running: the physical minimum that
the server CPU per handshake is shown as a multiple of.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

SIGNATURES = {"ecdsa": "ecdsap256", "rsa": "rsa2048"}
_SIGNATURE_LINE = re.compile(r"\s*(?:256 bits ecdsa \(nistp256\)|rsa 2048 bits)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)")
_EXCHANGE_LINE = re.compile(r"\s*253 bits ecdh \(X25519\)\s+\S+s\s+([\d.]+)")


def parse_speed(output: str) -> dict[str, float]:
    """Operations per second from ``openssl speed`` output: ``sign``, ``verify``, ``x25519``."""
    rates: dict[str, float] = {}
    for line in output.splitlines():
        signature = re.match(
            r"\s*(?:256 bits ecdsa \(nistp256\)|rsa 2048 bits)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", line
        )
        if signature:
            rates["sign"], rates["verify"] = float(signature.group(1)), float(signature.group(2))
        exchange = _EXCHANGE_LINE.match(line)
        if exchange:
            rates["x25519"] = float(exchange.group(1))
    missing = {"sign", "verify", "x25519"} - set(rates)
    if missing:
        raise ValueError(f"openssl speed printed no figure for {', '.join(sorted(missing))}:\n{output[-2000:]}")
    return rates


def floors(rates: dict[str, float]) -> dict[str, float]:
    """Microseconds per handshake: ``full``, ``full_mtls`` and ``resumed``."""
    sign, verify, exchange = (1e6 / rates[k] for k in ("sign", "verify", "x25519"))
    return {"full": sign + 2 * exchange, "full_mtls": sign + 2 * exchange + 2 * verify, "resumed": 2 * exchange}


def measure(key_type: str, openssl: str = "openssl") -> dict[str, Any]:
    command = [openssl, "speed", "-seconds", "1", SIGNATURES[key_type], "ecdhx25519"]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    rates = parse_speed(output)
    return {"command": " ".join(command), "ops_per_s": rates, "us_per_handshake": floors(rates)}


def floor_for(cell: dict[str, Any], floor: dict[str, Any]) -> float:
    """The floor (µs) of a cell's handshake."""
    kind = "resumed" if cell["resumed"] else "full_mtls" if cell["client_cert"] else "full"
    return float(floor["us_per_handshake"][kind])
