"""The benchmark harness performs the handshakes it reports: for every mode, the server's own count
of completed handshakes equals the clients' (tiny sizes: the whole module takes seconds)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import pausetls
from pausetls.cli.bench_command import find_bench_dir

from servers import require_binary

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # appended: the pausetls under test stays the one imported

from bench import floor, report  # noqa: E402
from bench.cell import Bench, measure, measure_data, measure_idle  # noqa: E402
from bench.loadgen import LoadGenerator  # noqa: E402
from bench.nginx import find_nginx  # noqa: E402
from bench.pki import BenchPKI, make_pki  # noqa: E402
from bench.plan import DATA_MODES, HTTP_MODES, MODES, PYTHON_MODES, Cell, Profile  # noqa: E402
from bench.servers import start_server  # noqa: E402

CLIENTS = 4
PER_CLIENT = 5


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pausetls-bench-test-") as directory:
        yield Path(directory)


@pytest.fixture(scope="module")
def bench_pki(work: Path) -> BenchPKI:
    return make_pki(work)


@pytest.fixture(scope="module")
def load(work: Path) -> Iterator[LoadGenerator]:
    generator = LoadGenerator(2, work)
    yield generator
    generator.close()


def run_counted(cell: Cell, pki: BenchPKI, load: LoadGenerator, work: Path) -> tuple[dict[str, int], dict]:  # type: ignore[type-arg]
    """Each client connects PER_CLIENT times; (the server's counters, the clients' report)."""
    nginx = find_nginx() if cell.mode == "nginx" else None
    if cell.mode == "nginx" and nginx is None:
        require_binary("nginx")
    server = start_server(cell, pki, work, nginx, 4096)
    try:
        load.start(cell, pki, server.port, ramp=0.0, per_client=PER_CLIENT)
        clients = load.wait_done(60)
        return server.stats(), clients
    finally:
        server.stop()


@pytest.mark.parametrize("mode", list(MODES))
def test_the_server_counts_the_handshakes_the_clients_made(
    mode: str, bench_pki: BenchPKI, load: LoadGenerator, work: Path
) -> None:
    waits = mode != "nginx"  # nginx has no callback: it runs at zero latency only
    cell = Cell("test", mode, CLIENTS, 10 if waits else 0, client_cert=True, callback="verify" if waits else "none")
    server, clients = run_counted(cell, bench_pki, load, work)
    assert clients["errors"] == {}, clients["error_samples"]
    assert clients["ok"] == CLIENTS * PER_CLIENT
    assert server["handshakes_completed"] == clients["ok"]
    assert all(latency >= 0.010 for latency in clients["latencies"]) or not waits


@pytest.mark.parametrize("mode", PYTHON_MODES)
def test_resumed_cells_resume(mode: str, bench_pki: BenchPKI, load: LoadGenerator, work: Path) -> None:
    cell = Cell("test", mode, CLIENTS, 0, callback="session", resumed=True)
    server, clients = run_counted(cell, bench_pki, load, work)
    assert clients["errors"] == {}, clients["error_samples"]
    assert server["handshakes_completed"] == clients["ok"] == CLIENTS * PER_CLIENT
    # each client's first connection is a full handshake; every later one resumes: the in-memory store is
    # written inside the handshake (it never waits), so the session is there before the client can offer it
    assert server["resumed"] == clients["resumed"] == CLIENTS * (PER_CLIENT - 1)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("pausetls-gevent", "tickets"),
        ("pausetls-gevent", "memcached"),
        ("stdlib-gevent", "tickets"),
        ("nginx", "tickets"),
    ],
)
def test_resumption_cells_count_what_their_clients_report(
    mode: str, kind: str, bench_pki: BenchPKI, load: LoadGenerator, work: Path
) -> None:
    if kind == "memcached":
        require_binary("memcached")
    server, clients = run_counted(Cell("resumption", mode, CLIENTS, callback=kind, resumed=True), bench_pki, load, work)
    assert clients["errors"] == {}, clients["error_samples"]
    assert server["handshakes_completed"] == clients["ok"] == CLIENTS * PER_CLIENT
    if kind == "tickets":  # no deferred write: every connection after a client's first resumes
        assert clients["resumed"] == CLIENTS * (PER_CLIENT - 1)
    else:  # the store's write is deferred (see test_resumed_cells_resume)
        assert clients["resumed"] >= CLIENTS * (PER_CLIENT // 2)
    if mode != "nginx":
        assert server["resumed"] == clients["resumed"]


def test_a_measured_cell_and_its_report(bench_pki: BenchPKI, load: LoadGenerator, work: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot needs the bench extra: pip install '.[bench]'")
    profile = Profile("test", warmup_min=0.2, warmup_max=2.0, window=0.5, drain=2.0)
    cell = Cell("crypto", "pausetls-gevent", 4)
    result = measure(cell, Bench(profile, bench_pki, load, work, None, 4096), lambda _: None)
    assert result["counts_consistent"] and result["errors"] == 0
    assert result["server_completed_total"] == result["client_completed_total"] > 0
    assert result["handshakes_per_s"] > 0 and result["server_cpu_us_per_handshake"] > 0
    speed = SPEED_OUTPUT
    results = {
        "command": "pausetls bench --test",
        "profile": "test",
        "key_type": "ecdsa",
        "machine": {
            "date": "now",
            "cpus": 2,
            "cpu": "cpu",
            "memory_gib": 1,
            "kernel": "k",
            "python": "3",
            "libraries": {"gevent": "x"},
            "rlimit_nofile": 4096,
            "pausetls_openssl": pausetls.openssl_version(),
            "stdlib_ssl_openssl": "x",
            "nginx": None,
        },
        "crypto_floor": {"command": "openssl speed", "us_per_handshake": floor.floors(floor.parse_speed(speed))},
        "scenarios": [{"name": "crypto", "title": "Crypto"}],
        "cells": [result, {"cell": Cell("crypto", "nginx", 4).as_dict(), "key": "k", "skipped": "nginx is missing"}],
        "notes": ["nginx is missing"],
        "method": ["- how"],
        "elapsed_s": 1.0,
    }
    paths = report.write(results, work)
    table = paths["markdown"].read_text()
    assert "| pausetls-gevent | 4 | 0 ms |" in table and "skipped: nginx is missing" in table
    assert paths["plot"].read_bytes().startswith(b"\x89PNG")
    assert result["floor_multiple"] > 1


DATA_PROFILE = Profile("test", warmup_min=0.2, warmup_max=5.0, window=0.5, drain=5.0)
DATA_CELLS = [
    *(Cell("echo-1k", m, 3, work="echo", size=1024) for m in DATA_MODES),
    *(Cell("echo-16k", m, 2, work="echo", size=16384) for m in DATA_MODES),
    *(Cell("bulk", m, 1, work="bulk", size=65536) for m in DATA_MODES),
    *(Cell("http", m, 3, work="http") for m in HTTP_MODES),
]


@pytest.mark.parametrize("cell", DATA_CELLS, ids=lambda cell: f"{cell.work}{cell.size or ''}-{cell.mode}")
def test_a_data_cell_counts_the_work_its_clients_did(
    cell: Cell, bench_pki: BenchPKI, load: LoadGenerator, work: Path
) -> None:
    """Server CPU is per unit of the server's own count (round trips, GB, requests): the count must be
    what the clients did (bulk: the server is ahead by what the socket buffers hold, no more)."""
    nginx = find_nginx() if cell.mode == "nginx" else None
    if cell.mode == "nginx" and nginx is None:
        require_binary("nginx")
    result = measure_data(cell, Bench(DATA_PROFILE, bench_pki, load, work, nginx, 4096), lambda _: None)
    assert result["errors"] == 0, result["error_samples"]
    assert result["counts_consistent"], (result["server_units_total"], result["client_units_total"])
    assert result["client_units_total"] > 0 and result["units_per_s"] > 0
    assert result["server_cpu_us_per_unit"] > 0
    if cell.work != "bulk":
        assert result["server_units_total"] == result["client_units_total"]
        assert result["p50_ms"] is not None and result["p99_ms"] >= result["p50_ms"]


@pytest.mark.parametrize("mode", DATA_MODES)
def test_the_idle_cell_measures_every_connection_it_opened(
    mode: str, bench_pki: BenchPKI, load: LoadGenerator, work: Path
) -> None:
    cell = Cell("idle", mode, 20, work="idle", size=64)
    result = measure_idle(cell, Bench(DATA_PROFILE, bench_pki, load, work, None, 4096), lambda _: None)
    assert result["errors"] == 0, result["error_samples"]
    assert result["established"] == result["server_units_total"] == result["client_units_total"] == 20
    assert result["rss_per_connection_kib"] is not None


SPEED_OUTPUT = """
                              sign    verify    sign/s verify/s
 256 bits ecdsa (nistp256)   0.0000s   0.0001s  57221.2  18027.3
                              op      op/s
 253 bits ecdh (X25519)   0.0000s  38694.0
"""


def test_crypto_floor_from_openssl_speed() -> None:
    rates = floor.parse_speed(SPEED_OUTPUT)
    assert rates == {"sign": 57221.2, "verify": 18027.3, "x25519": 38694.0}
    floors = floor.floors(rates)
    assert floors["full"] == pytest.approx(1e6 / 57221.2 + 2e6 / 38694.0)
    assert floors["full_mtls"] == pytest.approx(floors["full"] + 2e6 / 18027.3)
    with pytest.raises(ValueError, match="x25519"):
        floor.parse_speed(SPEED_OUTPUT.split("op ")[0])


def test_the_cli_finds_the_harness_or_says_how(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert find_bench_dir(ROOT / "bench") == (ROOT / "bench").resolve()
    assert find_bench_dir(tmp_path) is None
    from pausetls.cli.main import main

    assert main(["bench", "--bench-dir", str(tmp_path)]) == 2
    assert "--bench-dir PATH/bench" in capsys.readouterr().err
