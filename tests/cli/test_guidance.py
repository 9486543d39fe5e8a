"""What ``pausetls serve`` tells its user at start (one warning line each), the errors that name what to
do, ``--keylog``, ``--version`` and ``bench --help`` outside a checkout: all run as subprocesses."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import pausetls

from conftest import require_binary
from pki import Issued
from served import Served, killed_at_end, pausetls_env, run_pausetls, session_key_file, start_tracked
from servers import free_port

WARNING = re.compile(r"^pausetls: warning: ", re.M)
STORE_FAILING = re.compile(r"session store failing: .* \((?P<count>\d+) failures?")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Served]]:
    """Served processes to kill at the end of the test, whatever happens."""
    with killed_at_end() as processes:
        yield processes


def wait_for_counters(served: Served, pattern: str) -> None:
    """Ask the running server for its counters (SIGUSR1) until a report matches *pattern*: its session writes
    are deferred, so they may land after the client has its answer; fails the test after GENEROUS seconds."""
    seen = threading.Event()

    def ask() -> None:
        while not seen.wait(0.2):
            served.proc.send_signal(signal.SIGUSR1)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    try:
        served.wait_for(re.compile(r"^pausetls: running; counters: .*" + pattern))
    finally:
        seen.set()
        asker.join()


def curl(port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [require_binary("curl"), "-sS", "-k", "--noproxy", "*", "--max-time", "10", *args]
    return subprocess.run(
        [*command, f"https://127.0.0.1:{port}/?format=text"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def certificate(directory: Path, not_after: datetime.datetime) -> tuple[Path, Path]:
    """A self-signed localhost certificate valid until *not_after*, and its key (written 0644, as a cp would)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - datetime.timedelta(days=90))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o644)
    return cert_path, key_path


def test_expired_certificate_open_key_shared_store_without_key_file_and_store_down(
    started: list[Served], tmp_path: Path
) -> None:
    expired = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.UTC)
    cert, key = certificate(tmp_path, expired)
    store = f"memcached://127.0.0.1:{free_port()}"  # nothing listens there
    served = start_tracked(started, tmp_path, "--cert", cert, "--key", key, "--session-store", store)

    warnings = WARNING.findall(served.stderr)
    assert len(warnings) == 4, served.stderr
    stderr = served.stderr
    assert f"the certificate in {cert} expired on 2025-03-01 12:00 UTC: clients will refuse it" in stderr
    assert f"the private key {key} is readable by group and others (mode 0644): run 'chmod 600 {key}'" in stderr
    assert "without --session-key-file" in stderr and "'pausetls keys new FILE'" in stderr
    assert len(re.findall(rf"session store {re.escape(store)} does not answer \(SessionStoreError", stderr)) == 1

    for _ in range(3):  # served with full handshakes; the store's failures make one line, not three
        assert curl(served.port).returncode == 0
    wait_for_counters(served, r'"store_failures": 3\b')
    assert served.stop() == 0
    assert [int(m["count"]) for m in served.log_matches(STORE_FAILING)] == [1]


def test_certificate_expiring_soon_and_workers_on_a_memory_store(
    started: list[Served], tmp_path: Path, server_cert: Issued
) -> None:
    key = tmp_path / "key.pem"
    shutil.copy(server_cert.key_path, key)
    key.chmod(0o600)
    keys = session_key_file(tmp_path)
    keys.chmod(0o640)  # the group may read it: warned
    keylog = tmp_path / "old.keys"
    keylog.touch()
    keylog.chmod(0o644)  # a key log left readable by everyone: warned, not silently appended to
    served = start_tracked(
        started,
        tmp_path,
        *("--cert", server_cert.chain_path, "--key", key, "--session-key-file", keys, "--workers", "2"),
        *("--keylog", keylog),
    )
    stderr = served.stderr
    assert len(WARNING.findall(stderr)) == 5, stderr
    expiry = x509.load_pem_x509_certificate(server_cert.chain_path.read_bytes()).not_valid_after_utc
    assert re.search(
        rf"the certificate in {re.escape(str(server_cert.chain_path))} expires on "
        rf"{expiry:%Y-%m-%d %H:%M} UTC \(in 2\d days\): renew it",
        stderr,
    )
    assert "--workers 2 with --session-store memory://: each worker keeps its own sessions" in stderr
    assert f"the session key file {keys} is readable by group (mode 0640)" in stderr
    assert "private key" not in stderr
    assert f"the key log file {keylog} is readable by group and others (mode 0644)" in stderr
    assert f"--keylog {keylog}: the TLS secrets of every connection are appended to it" in stderr


def test_keylog_lines_equal_curls(started: list[Served], tmp_path: Path) -> None:
    server_log, curl_log = tmp_path / "server.keys", tmp_path / "curl.keys"
    served = start_tracked(started, tmp_path, "--keylog", server_log)
    assert WARNING.findall(served.stderr) == ["pausetls: warning: "], served.stderr  # only --keylog's
    assert f"--keylog {server_log}: the TLS secrets of every connection" in served.stderr
    for version in ("1.2", "1.3"):
        result = curl(
            served.port, f"--tlsv{version}", "--tls-max", version, env=dict(os.environ, SSLKEYLOGFILE=str(curl_log))
        )
        assert result.returncode == 0, result.stderr

    def lines(path: Path) -> set[str]:
        return {line for line in path.read_text().splitlines() if line and not line.startswith("#")}

    assert lines(server_log) == lines(curl_log)
    assert {line.split()[0] for line in lines(server_log)} >= {"CLIENT_RANDOM", "SERVER_TRAFFIC_SECRET_0"}
    assert len({line.split()[1] for line in lines(server_log)}) == 2  # two connections
    assert server_log.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("option", ["--cert", "--key", "--cafile", "--session-key-file"])
def test_a_missing_file_is_named(option: str, tmp_path: Path, server_cert: Issued) -> None:
    missing = tmp_path / "missing.pem"
    files = {"--cert": server_cert.chain_path, "--key": server_cert.key_path, option: missing}
    args = [arg for pair in files.items() for arg in pair]
    result = run_pausetls(tmp_path, "serve", "--port", "0", *args)
    assert result.returncode == 1
    assert re.fullmatch(
        rf"pausetls: error: no such file: {re.escape(str(missing))} \(the [a-zA-Z ]+\)\n", result.stderr
    )
    assert "serving" not in result.stdout


@pytest.mark.parametrize(
    ("scheme", "module", "extra"), [("memcached", "pymemcache", "memcached"), ("redis", "redis", "redis")]
)
def test_a_missing_store_library_names_the_extra(scheme: str, module: str, extra: str, tmp_path: Path) -> None:
    # an importable stand-in that fails as a missing package does
    (tmp_path / module).mkdir()
    (tmp_path / module / "__init__.py").write_text(
        f'raise ModuleNotFoundError("No module named {module!r}", name={module!r})\n'
    )
    env = pausetls_env()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    result = run_pausetls(tmp_path, "serve", "--port", "0", "--session-store", f"{scheme}://127.0.0.1:1", env=env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"pip install 'pausetls[{extra}]' (or 'pausetls[stores]' for both stores)" in result.stderr


def test_version_names_pausetls_and_its_openssl(tmp_path: Path) -> None:
    result = run_pausetls(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout == f"pausetls {pausetls.__version__} ({pausetls.openssl_version()})\n"


def test_bench_help_without_a_checkout(tmp_path: Path) -> None:
    """An installed pausetls (here a copy of the package, away from the checkout's bench/) still explains bench."""
    shutil.copytree(
        Path(pausetls.__file__).parent, tmp_path / "site" / "pausetls", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    helped = run_pausetls(tmp_path, "bench", "--help", env=env)
    assert helped.returncode == 0, helped.stderr
    assert (
        helped.stdout.startswith("usage: pausetls bench")
        and "bench/ directory of a pausetls source checkout" in helped.stdout
    )
    ran = run_pausetls(tmp_path, "bench", "--quick", env=env)
    assert ran.returncode == 2
    assert ran.stderr.count("\n") == 1 and ran.stderr.startswith("pausetls bench: no benchmark harness found")


def test_bench_help_given_the_checkout_harness_is_the_harness_help(tmp_path: Path) -> None:
    bench_dir = Path(__file__).resolve().parents[2] / "bench"  # these tests live in the checkout, beside bench/
    helped = run_pausetls(tmp_path, "bench", "--bench-dir", bench_dir, "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: pausetls bench") and "--quick" in helped.stdout
