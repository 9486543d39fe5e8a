"""Default protocol settings (`pausetls.core.tls_defaults`): Mozilla intermediate for servers, CPython's for clients.

Checked against real peers: CPython's ``ssl`` restricted to one suite, ``openssl s_client``
restricted to one group, ``openssl s_server`` offering one suite, and sslyze's own
``--mozilla_config=intermediate`` check against ``pausetls serve``.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import gevent
import pytest

import pausetls

from conftest import make_server_context, require_binary, stdlib_client_context, wait_until
from peers import DEFAULT_TIMEOUT, PeerGroup
from pki import PKI, Issued
from served import Served

SSLYZE_VERSION = "6.3.1"  # pins cryptography < 47: it runs from its own virtualenv, made once per machine
SSLYZE_INSTALL_TIMEOUT = 600

STATIC_RSA_OR_CBC = [
    pytest.param("AES128-SHA", id="static-RSA-CBC-SHA1"),
    pytest.param("AES256-SHA256", id="static-RSA-CBC-SHA256"),
    pytest.param("AES128-GCM-SHA256", id="static-RSA-GCM"),
    pytest.param("ECDHE-RSA-AES128-SHA", id="ECDHE-CBC-SHA1"),
    pytest.param("ECDHE-RSA-AES256-SHA384", id="ECDHE-CBC-SHA384"),
]


@pytest.fixture(scope="session")
def rsa_server_cert(pki: PKI) -> Issued:
    """An RSA server certificate: static RSA key exchange (what the defaults refuse) needs one."""
    return pki.issue("localhost rsa", rsa_key=True)


def stdlib_tls12_handshake(pki: PKI, port: int, cipher: str) -> str:
    """A CPython client offering only *cipher* under TLS 1.2: the cipher negotiated (raises if refused)."""
    context = stdlib_client_context(pki, version=pausetls.TLS1_2_VERSION, cooperative=True)
    context.set_ciphers(cipher)
    with gevent.socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"x")
            assert tls.recv(1) == b"x"
            negotiated = tls.cipher()
            assert negotiated is not None
            return negotiated[0]


@pytest.mark.parametrize("cipher", STATIC_RSA_OR_CBC)
def test_a_server_refuses_static_rsa_and_cbc_suites_by_default(
    cipher: str, pki: PKI, rsa_server_cert: Issued, start_server: Any
) -> None:
    server = start_server(make_server_context(rsa_server_cert))
    with pytest.raises(ssl.SSLError, match=r"handshake failure|no shared cipher"):
        stdlib_tls12_handshake(pki, server.server_port, cipher)
    assert wait_until(lambda: server.stats.handshakes_failed == 1)
    # the same server, the same client, an ECDHE + AEAD suite: served
    assert (
        stdlib_tls12_handshake(pki, server.server_port, "ECDHE-RSA-AES128-GCM-SHA256") == "ECDHE-RSA-AES128-GCM-SHA256"
    )
    assert server.stats.handshakes_completed == 1


def test_set_cipher_list_overrides_the_default(pki: PKI, rsa_server_cert: Issued, start_server: Any) -> None:
    ctx = make_server_context(rsa_server_cert)
    ctx.set_cipher_list("AES128-SHA")
    server = start_server(ctx)
    assert stdlib_tls12_handshake(pki, server.server_port, "AES128-SHA") == "AES128-SHA"


def test_every_mozilla_intermediate_suite_is_served(pki: PKI, rsa_server_cert: Issued, start_server: Any) -> None:
    server = start_server(make_server_context(rsa_server_cert))
    for cipher in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"):
        assert stdlib_tls12_handshake(pki, server.server_port, cipher) == cipher


@pytest.fixture(scope="session")
def dh_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RFC 7919's ffdhe2048 group as PEM DH parameters (a named group: nothing to generate)."""
    path = tmp_path_factory.mktemp("dh") / "ffdhe2048.pem"
    openssl = require_binary("openssl")
    argv = [openssl, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048", "-out", str(path)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return path


def test_dhe_suites_are_negotiated_only_with_dh_parameters(
    pki: PKI, rsa_server_cert: Issued, dh_params: Path, start_server: Any
) -> None:
    without = start_server(make_server_context(rsa_server_cert))
    with pytest.raises(ssl.SSLError, match=r"handshake failure|no shared cipher"):
        stdlib_tls12_handshake(pki, without.server_port, "DHE-RSA-AES128-GCM-SHA256")
    ctx = make_server_context(rsa_server_cert)
    ctx.load_tmp_dh(dh_params)
    with_params = start_server(ctx)
    for cipher in ("DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305"):
        assert stdlib_tls12_handshake(pki, with_params.server_port, cipher) == cipher
    with pytest.raises(ssl.SSLError, match=r"handshake failure|no shared cipher"):
        stdlib_tls12_handshake(pki, with_params.server_port, "DHE-RSA-AES128-SHA256")  # CBC: still refused


def test_load_tmp_dh_refuses_what_is_not_dh_parameters(rsa_server_cert: Issued, tmp_path: Path) -> None:
    ctx = make_server_context(rsa_server_cert)
    with pytest.raises(pausetls.Error, match="cannot load DH parameters"):
        ctx.load_tmp_dh(rsa_server_cert.cert_path)
    with pytest.raises(pausetls.MissingFileError, match=r"no such file: .*missing\.pem"):
        ctx.load_tmp_dh(tmp_path / "missing.pem")


@pytest.mark.parametrize("group", ["X448", "P-521"])
def test_a_server_refuses_the_groups_mozilla_rejects(
    group: str, tls_version: int, openssl: str, rsa_server_cert: Issued, start_server: Any, peers: PeerGroup
) -> None:
    # an RSA certificate: under TLS 1.2 the client's groups also bound the curve of an ECDSA one
    server = start_server(make_server_context(rsa_server_cert, tls_version))
    flag = "-tls1_2" if tls_version == pausetls.TLS1_2_VERSION else "-tls1_3"
    refused = peers.process(
        [openssl, "s_client", "-connect", f"127.0.0.1:{server.server_port}", flag, "-groups", group]
    )
    refused.close_stdin()
    refused.wait()
    assert "handshake failure" in refused.stderr.text, refused.describe()
    assert wait_until(lambda: server.stats.handshakes_failed == 1)
    served = peers.process(
        [openssl, "s_client", "-connect", f"127.0.0.1:{server.server_port}", flag, "-groups", "P-384"]
    )
    served.close_stdin()
    served.wait()
    assert "Server Temp Key: ECDH, secp384r1" in served.stdout.text, served.describe()


def test_a_client_refuses_a_server_with_only_static_rsa_like_cpython_does(
    openssl: str, pki: PKI, rsa_server_cert: Issued, peers: PeerGroup
) -> None:
    """``TLS_CLIENT_METHOD`` contexts offer CPython's default suites, which leave static RSA out."""
    args = ["-cert", str(rsa_server_cert.cert_path), "-key", str(rsa_server_cert.key_path), "-tls1_2"]
    args += ["-cert_chain", str(pki.intermediate.cert_path)]
    server = peers.s_server(openssl, [*args, "-cipher", "AES128-SHA", "-naccept", "1"])
    with pytest.raises(pausetls.Error, match="handshake failure"):
        with pausetls.connect(
            ("127.0.0.1", server.port),
            pausetls.client_context(str(pki.ca_path)),
            server_hostname="localhost",
            timeout=DEFAULT_TIMEOUT,
        ):
            pass
    cpython = ssl.create_default_context(cafile=str(pki.ca_path))
    assert not {"AES128-SHA", "AES256-SHA256"} & {c["name"] for c in cpython.get_ciphers()}


# -- sslyze ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sslyze() -> list[str]:
    """The command that runs sslyze, from a virtualenv of its own (sslyze pins cryptography < 47,
    older than pausetls's): made on first use under the user's cache directory, then reused."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pausetls-tests"
    venv = cache / f"sslyze-{SSLYZE_VERSION}-py{sys.version_info.major}.{sys.version_info.minor}"
    python = venv / "bin" / "python"
    if not python.exists():
        partial = cache / f"{venv.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True, capture_output=True)
            subprocess.run(
                [str(partial / "bin" / "python"), "-m", "pip", "install", "-q", f"sslyze=={SSLYZE_VERSION}"],
                check=True,
                capture_output=True,
                timeout=SSLYZE_INSTALL_TIMEOUT,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            output = (exc.stderr or b"").decode(errors="replace")[-2000:]
            pytest.fail(f"cannot install sslyze {SSLYZE_VERSION} into a virtualenv: {exc}\n{output}")
        try:
            os.replace(partial, venv)  # whole or not at all; `python -m sslyze` does not care where the venv was made
        except OSError:  # another test run on this machine made it meanwhile: use theirs
            shutil.rmtree(partial, ignore_errors=True)
            if not python.exists():
                raise
    return [str(python), "-m", "sslyze"]


def test_pausetls_serve_passes_sslyze_mozilla_intermediate_check(
    sslyze: list[str], pki: PKI, server_cert: Issued, tmp_path: Path
) -> None:
    """sslyze's own compliance check against ``pausetls serve`` with its defaults.

    The certificate is the test PKI's (ECDSA P-256, 31 days, with key identifiers), trusted
    through ``--certinfo_ca_file``: the check also wants a certificate that validates, which a
    self-signed one cannot (its lifespan and key, 7 days and P-256, pass the check).
    """
    served = Served(["--cert", str(server_cert.chain_path), "--key", str(server_cert.key_path)], tmp_path / "serve")
    try:
        result = subprocess.run(
            [
                *sslyze,
                "--mozilla_config=intermediate",
                f"--certinfo_ca_file={pki.ca_path}",
                f"localhost:{served.port}{{127.0.0.1}}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        served.kill()
    report = result.stdout[result.stdout.find("COMPLIANCE AGAINST") :]
    assert result.returncode == 0, f"sslyze exit {result.returncode}:\n{report or result.stdout}\n{result.stderr}"
    assert f"localhost:{served.port}: OK - Compliant." in report, report
