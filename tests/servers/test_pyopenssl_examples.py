"""pyOpenSSL's own example scripts, ported by their import line alone, against peers that are not ours.

``tests/pyopenssl_examples/client.py`` and ``server.py`` are pyOpenSSL's
``examples/simple/client.py`` and ``server.py`` (pyca/pyopenssl commit
01f82f5ac28fe3dcaff2de99150c4fd6a5d7a755); the one change is
``from OpenSSL import SSL, crypto`` -> ``import pausetls as SSL`` plus
``from OpenSSL import crypto``.  They read their key files from their own
directory, so each test copies them next to a fresh PKI under the names they
expect.  The server binds every interface; ``loopback_runner.py`` (harness, not
script) narrows that to 127.0.0.1.  Plain sockets: the threads driver.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import sys
from pathlib import Path

import pytest

import pausetls

from conftest import stdlib_client_context
from gates import GENEROUS
from peers import PeerGroup, run_in_thread
from pki import PKI, Issued
from served import pausetls_env
from servers import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "pyopenssl_examples"
VERSION_FLAG = {pausetls.TLS1_2_VERSION: "-tls1_2", pausetls.TLS1_3_VERSION: "-tls1_3"}


@pytest.fixture
def example_dir(tmp_path: Path, pki: PKI, server_cert: Issued, client_cert: Issued) -> Path:
    """The scripts with the files they load: ``{server,client}.{cert,pkey}`` (chains) and ``CA.cert``."""
    for name in ("client.py", "server.py", "loopback_runner.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    for role, issued in (("server", server_cert), ("client", client_cert)):
        shutil.copy(issued.chain_path, tmp_path / f"{role}.cert")
        shutil.copy(issued.key_path, tmp_path / f"{role}.pkey")
    shutil.copy(pki.ca_path, tmp_path / "CA.cert")
    return tmp_path


def _python(script: Path, *args: str) -> list[str]:
    """Run *script* with the pausetls these tests import; ``-W ignore``: pyOpenSSL's own deprecation
    warnings (``X509Name``) and the one for ``str`` data, which pyOpenSSL gives too."""
    path = pausetls_env()["PYTHONPATH"]
    return ["env", f"PYTHONPATH={path}", sys.executable, "-u", "-W", "ignore", str(script), *args]


def _listening(port: int) -> bool:
    """Is something listening on 127.0.0.1:*port*?  (Read from the kernel: a probe would be a client.)"""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return any(row[1] == f"0100007F:{port:04X}" and row[3] == "0A" for row in rows)


def _s_client(openssl: str, port: int, version: int, directory: Path, *cert: str) -> list[str]:
    """``openssl s_client`` verifying the server; stdin is data, its EOF a close_notify."""
    return [
        openssl,
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-CAfile",
        str(directory / "CA.cert"),
        "-verify_return_error",
        VERSION_FLAG[version],
        "-quiet",
        "-no_ign_eof",
        "-nocommands",
        *cert,
    ]


def _stdlib_exchange(context: ssl.SSLContext, port: int, line: bytes) -> bytes:
    """A stdlib ``ssl`` client: send *line*, read the echo, close with close_notify both ways."""
    with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as raw:
        tls = context.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(line)
        with tls.makefile("rb") as reader:
            echoed = reader.readline()
        tls.unwrap()
        return echoed


def test_ported_server_serves_s_client_and_stdlib_and_turns_away_clients_without_a_certificate(
    peers: PeerGroup, openssl: str, example_dir: Path, pki: PKI, client_cert: Issued, untrusted_client_cert: Issued
) -> None:
    port = free_port()
    server = peers.process(_python(example_dir / "loopback_runner.py", str(example_dir / "server.py"), str(port)))
    server.wait_for(lambda: _listening(port), "the example server to listen", poll=0.02)
    with_cert = ["-cert", str(example_dir / "client.cert"), "-key", str(example_dir / "client.pkey")]
    with_cert += ["-cert_chain", str(pki.intermediate.cert_path)]

    for version, line in ((pausetls.TLS1_2_VERSION, b"over tls 1.2\n"), (pausetls.TLS1_3_VERSION, b"over tls 1.3\n")):
        client = peers.process(_s_client(openssl, port, version, example_dir, *with_cert))
        client.write(line)
        client.wait_output(line)  # the echo: handshake with client certificate, select loop, send
        client.close_stdin()
        assert client.wait() == 0, client.describe()

    # a client without a certificate, and one from another CA: refused, and the server goes on
    intruder = untrusted_client_cert
    for refused in ([], ["-cert", str(intruder.chain_path), "-key", str(intruder.key_path)]):
        client = peers.process(_s_client(openssl, port, pausetls.TLS1_3_VERSION, example_dir, *refused))
        client.write(b"let me in\n")
        client.close_stdin()
        client.wait()
        assert b"let me in" not in client.stdout.data, client.describe()

    stdlib = stdlib_client_context(pki, client_cert, pausetls.TLS1_3_VERSION)
    assert run_in_thread(_stdlib_exchange, stdlib, port, b"from stdlib\n") == b"from stdlib\n"

    def goodbyes() -> tuple[int, int]:
        return server.stdout.text.count("left politely"), server.stdout.text.count("left unexpectedly")

    # three served, and the two refused clients one line each
    server.wait_for(lambda: goodbyes() == (3, 2), "three polite goodbyes and two refusals")
    out = server.stdout.text
    assert out.count("Got certificate: client one") == 3, server.describe()
    assert "certificate verify failed" in out, server.describe()


@pytest.mark.parametrize("version", [pausetls.TLS1_2_VERSION, pausetls.TLS1_3_VERSION], ids=["TLSv1.2", "TLSv1.3"])
def test_ported_client_talks_to_s_server(
    peers: PeerGroup, openssl: str, example_dir: Path, pki: PKI, server_cert: Issued, version: int
) -> None:
    # -rev answers each line reversed: proof the bytes went through TLS both ways
    args = ["-cert", str(server_cert.cert_path), "-key", str(server_cert.key_path)]
    args += ["-cert_chain", str(pki.intermediate.cert_path), "-CAfile", str(pki.ca_path), "-Verify", "2"]
    server = peers.s_server(openssl, [*args, "-rev", VERSION_FLAG[version]])
    client = peers.process(_python(example_dir / "client.py", "127.0.0.1", str(server.port)))
    client.write(b"hello\nworld\n")
    client.close_stdin()
    assert client.wait() == 0, client.describe()
    out = client.stdout.text
    assert out.splitlines()[:5] == [
        "Got certificate: pausetls test root",
        "Got certificate: pausetls test intermediate",
        "Got certificate: localhost",
        "olleh",
        "dlrow",
    ], client.describe()
    server.wait_for(lambda: b"CONNECTION CLOSED" in server.stderr.data, "s_server to see a clean close")
    assert f"Protocol version: {'TLSv1.3' if version == pausetls.TLS1_3_VERSION else 'TLSv1.2'}" in server.stderr.text
    assert "Peer certificate: O = pausetls tests, CN = client one" in server.stderr.text


def test_ported_client_refuses_a_server_from_another_ca(
    peers: PeerGroup, openssl: str, example_dir: Path, other_pki: PKI
) -> None:
    impostor = other_pki.issue("localhost")
    args = ["-cert", str(impostor.cert_path), "-key", str(impostor.key_path)]
    server = peers.s_server(openssl, [*args, "-cert_chain", str(other_pki.intermediate.cert_path), "-rev"])
    client = peers.process(_python(example_dir / "client.py", "127.0.0.1", str(server.port)))
    client.write(b"secret\n")
    client.close_stdin()
    client.wait()
    assert "Connection died unexpectedly" in client.stdout.text, client.describe()
    assert "terces" not in client.stdout.text
    server.wait_for(lambda: b"alert" in server.stdout.data + server.stderr.data, "s_server to get the alert")
