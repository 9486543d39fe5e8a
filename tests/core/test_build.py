"""The build stops with one clear sentence when OpenSSL 3 headers are missing or too old."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pausetls

BUILD_SCRIPT = Path(pausetls.__file__).parent / "core" / "_build_openssl.py"


def run_build_script(prefix: Path) -> subprocess.CompletedProcess[str]:
    code = f"import runpy; runpy.run_path({str(BUILD_SCRIPT)!r})"
    env = {"PATH": "/usr/bin:/bin", "PAUSETLS_OPENSSL_PREFIX": str(prefix)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_openssl_1_1_headers_stop_the_build_naming_what_to_install(tmp_path: Path) -> None:
    # headers under the prefix shadow the system's 3.x ones (a missing header falls back to them)
    include = tmp_path / "include" / "openssl"
    include.mkdir(parents=True)
    (include / "opensslv.h").write_text("#define OPENSSL_VERSION_NUMBER 0x1010117fL\n")
    result = run_build_script(tmp_path)
    assert result.returncode != 0
    assert "OpenSSL >= 3.0 development headers not found; install them" in result.stderr
    assert "libssl-dev" in result.stderr
