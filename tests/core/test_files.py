"""Files pausetls is given: a missing one is named ("no such file: PATH"), and an unbuilt checkout says
how to build it instead of failing on a missing module."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pausetls

from pki import PKI, Issued

LOADERS: dict[str, Callable[[pausetls.Context, Path], Any]] = {
    "certificate chain": lambda ctx, path: ctx.use_certificate_chain_file(path),
    "certificate": lambda ctx, path: ctx.use_certificate_file(path, pausetls.FILETYPE_ASN1),
    "private key": lambda ctx, path: ctx.use_privatekey_file(str(path)),
    "CA file": lambda ctx, path: ctx.load_verify_locations(path),
    "CA directory": lambda ctx, path: ctx.load_verify_locations(None, path),
    "DH parameters": lambda ctx, path: ctx.load_tmp_dh(path),
}


@pytest.mark.parametrize("what", list(LOADERS))
def test_a_missing_file_is_named(what: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    with pytest.raises(pausetls.MissingFileError) as raised:
        LOADERS[what](ctx, missing)
    assert str(raised.value) == f"no such file: {missing} (the {what})"
    assert isinstance(raised.value, FileNotFoundError) and isinstance(raised.value, pausetls.Error)
    assert raised.value.filename == str(missing)
    assert "system library" not in str(raised.value)


def test_an_unreadable_file_still_gets_openssls_reason(tmp_path: Path, pki: PKI, server_cert: Issued) -> None:
    """Only absence is checked up front; a file that exists but is no certificate is OpenSSL's to explain."""
    ctx = pausetls.Context(pausetls.TLS_SERVER_METHOD)
    with pytest.raises(pausetls.Error, match="cannot load certificate chain") as raised:
        ctx.use_certificate_chain_file(server_cert.key_path)
    assert not isinstance(raised.value, FileNotFoundError)


def test_importing_an_unbuilt_checkout_says_how_to_build_it(tmp_path: Path) -> None:
    package = Path(pausetls.__file__).parent
    shutil.copytree(package, tmp_path / "pausetls", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    assert not list((tmp_path / "pausetls").rglob("*.so"))
    result = subprocess.run(
        [sys.executable, "-c", "import pausetls"],
        cwd=tmp_path,  # the copy comes first on sys.path, ahead of any installed pausetls
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: pausetls is not built: ")
    assert "'pip install .'" in last and "'python setup.py build_ext --inplace'" in last
    assert result.stderr.count("Traceback") == 1 and "During handling" not in result.stderr
