"""A key service in a process of its own: it holds private keys and signs digests for a TLS server
that holds only its certificates (``tests/core/test_remote_key.py``).

Run as ``python tests/key_service.py [--overlap N] NAME=KEY.pem ...``; it prints its port on the first
line of stdout.  It imports no pausetls.  One request per TCP connection, JSON lines:

* ``{"key": NAME, "scheme": "ecdsa_secp256r1_sha256", "digest": HEX}`` -> ``{"signature": HEX}`` or
  ``{"error": TEXT}``;
* ``{"stats": true}`` -> ``{"signed": n, "most_in_flight": n, "gate_timed_out": bool}``.

``--overlap N`` is the proof that signing overlaps, without timing: no signature is answered until N
requests are in flight at once (then every request goes through).  A server that signed one
handshake at a time would never get there; after a generous wait the service answers errors and says so.
"""

from __future__ import annotations

import argparse
import json
import socketserver
import sys
import threading
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

GENEROUS = 60.0  # as tests/gates.py: far more than the wait takes on an idle machine

_HASHES: dict[str, hashes.HashAlgorithm] = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


def sign(key: Any, scheme: str, digest: bytes) -> bytes:
    """The signature TLS expects for *scheme* over a *digest* computed by the server: DER for ECDSA, raw RSA."""
    algorithm = _HASHES[scheme[-3:]]
    if isinstance(key, ec.EllipticCurvePrivateKey) and scheme.startswith("ecdsa_"):
        return key.sign(digest, ec.ECDSA(utils.Prehashed(algorithm)))
    if isinstance(key, rsa.RSAPrivateKey) and scheme.startswith("rsa_pss_rsae_"):
        pss = padding.PSS(padding.MGF1(algorithm), padding.PSS.DIGEST_LENGTH)
        return key.sign(digest, pss, utils.Prehashed(algorithm))
    if isinstance(key, rsa.RSAPrivateKey) and scheme.startswith("rsa_pkcs1_"):
        return key.sign(digest, padding.PKCS1v15(), utils.Prehashed(algorithm))
    raise ValueError(f"{scheme} does not fit a {type(key).__name__}")


class OverlapGate:
    """Opens (for good) once *expected* requests are inside at once; 0 means always open."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.inside = 0
        self.most_inside = 0
        self.timed_out = False
        self._changed = threading.Condition()

    def pass_through(self) -> bool:
        with self._changed:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            if self.inside >= self.expected:
                self._changed.notify_all()
            opened = self._changed.wait_for(lambda: self.most_inside >= self.expected, GENEROUS)
            self.inside -= 1
            self.timed_out |= not opened
            return opened


class KeyService(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, keys: dict[str, Any], overlap: int) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.keys = keys
        self.gate = OverlapGate(overlap)
        self.signed = 0
        self._lock = threading.Lock()

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("stats"):
            return {
                "signed": self.signed,
                "most_in_flight": self.gate.most_inside,
                "gate_timed_out": self.gate.timed_out,
            }
        if not self.gate.pass_through():
            return {"error": f"never {self.gate.expected} requests in flight at once (at most {self.gate.most_inside})"}
        signature = sign(self.keys[request["key"]], request["scheme"], bytes.fromhex(request["digest"]))
        with self._lock:
            self.signed += 1
        return {"signature": signature.hex()}


class Handler(socketserver.StreamRequestHandler):
    server: KeyService

    def handle(self) -> None:
        try:
            reply = self.server.answer(json.loads(self.rfile.readline()))
        except Exception as exc:  # noqa: BLE001 - any bad request is answered, not fatal
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--overlap", type=int, default=0)
    parser.add_argument("keys", nargs="+", help="NAME=PATH of a PEM private key")
    args = parser.parse_args()
    keys = {}
    for item in args.keys:
        name, path = item.split("=", 1)
        with open(path, "rb") as f:
            keys[name] = serialization.load_pem_private_key(f.read(), None)
    service = KeyService(keys, args.overlap)
    print(service.server_address[1], flush=True)
    service.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
