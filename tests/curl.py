"""curl as a test client: its command line, and the JSON bodies it prints for several URLs."""

from __future__ import annotations

import json
import os
from typing import Any

from pki import PKI, Issued
from servers import require_binary

SEPARATOR = "\n--curl-response-end--\n"


def curl_argv(*args: str | os.PathLike[str]) -> list[str]:
    """curl, silent but showing errors, never through a proxy, bounded in time; each response followed
    by `SEPARATOR` (split them with `json_bodies`)."""
    command = [require_binary("curl"), "-sS", "--noproxy", "*", "--max-time", "20", "-w", SEPARATOR]
    return command + [os.fspath(arg) for arg in args]


def client_cert_args(pki: PKI, client: Issued) -> list[str | os.PathLike[str]]:
    return ["--cacert", pki.ca_path, "--cert", client.chain_path, "--key", client.key_path]


def tls_version_args(version: str) -> list[str]:
    """Exactly TLS *version* ("1.2" or "1.3")."""
    return [f"--tlsv{version}", "--tls-max", version]


def json_bodies(stdout: str) -> list[Any]:
    return [json.loads(part) for part in stdout.split(SEPARATOR) if part.strip()]
