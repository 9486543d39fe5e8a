"""The outputs of a run: ``results.json`` (every figure), ``results.md`` (tables, ratios, targets), ``results.png``.

Figures per cell (see `bench.cell`):
hs/s: handshakes completed per second inside the window, counted by the clients;
p50/p99: client-side latency of one connection (connect, handshake, request, response);
server µs/hs: server CPU time (all its threads, from /proc) over the window divided by the
server's own count of handshakes completed in it; x floor: that over the `bench.floor` figure;
CPU %: of one core (the machine has `cpus` of them), for the server, the load processes and the whole
machine (which adds the kernel's loopback work, the harness, and anything else running);
RSS: the server's resident memory, peak and growth over its idle size (per client connection);
threads / greenlets / open: peaks (open = handshakes in progress at the server, by its own count);
errors: client-side failures in the whole cell; counts: the server's total completed handshakes
equal the clients' (a difference is allowed only up to the clients' own errors and cut-offs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.floor import floor_for
from bench.plan import CORES, MODES

Results = dict[str, Any]

COLUMNS = [
    ("mode", "mode"),
    ("c", "concurrency"),
    ("latency", "latency_ms"),
    ("hs/s", "handshakes_per_s"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("server µs/hs", "server_cpu_us_per_handshake"),
    ("x floor", "floor_multiple"),
    ("server CPU %", "server_cpu_pct"),
    ("load CPU %", "load_cpu_pct"),
    ("machine CPU %", "machine_cpu_pct"),
    ("peak RSS MiB", "peak_rss_mib"),
    ("RSS growth MiB", "rss_growth_mib"),
    ("KiB/conn", "rss_per_connection_kib"),
    ("threads", "peak_threads"),
    ("greenlets", "peak_greenlets"),
    ("open", "peak_open_handshakes"),
    ("errors", "errors"),
    ("counts", "counts_consistent"),
]
RESUMPTION_COLUMNS = [COLUMNS[0], ("resumption", "callback"), ("resumed %", "resumed_pct"), *COLUMNS[1:]]
HELD_COLUMNS = [
    ("mode", "mode"),
    ("clients", "concurrency"),
    ("paused", "peak_paused"),
    ("open", "peak_open_handshakes"),
    ("seconds to pause all", "seconds_to_peak"),
    ("idle RSS MiB", "idle_rss_mib"),
    ("RSS growth MiB", "rss_growth_mib"),
    ("KiB per paused handshake", "rss_per_paused_kib"),
    ("threads", "peak_threads"),
    ("greenlets", "peak_greenlets"),
]


DATA_COLUMNS = [
    ("mode", "mode"),
    ("c", "concurrency"),
    ("unit", "unit"),
    ("units/s", "units_per_s"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("server µs/unit", "server_cpu_us_per_unit"),
    ("server CPU %", "server_cpu_pct"),
    ("load CPU %", "load_cpu_pct"),
    ("machine CPU %", "machine_cpu_pct"),
    ("peak RSS MiB", "peak_rss_mib"),
    ("errors", "errors"),
    ("counts", "counts_consistent"),
]
IDLE_COLUMNS = [
    ("mode", "mode"),
    ("clients", "concurrency"),
    ("established", "established"),
    ("seconds to establish", "seconds_to_establish"),
    ("idle RSS MiB", "idle_rss_mib"),
    ("RSS MiB", "rss_mib"),
    ("RSS growth MiB", "rss_growth_mib"),
    ("KiB per connection", "rss_per_connection_kib"),
    ("errors", "errors"),
    ("counts", "counts_consistent"),
]


def _columns(scenario: str, results: list[Results]) -> list[tuple[str, str]]:
    works = {r["cell"].get("work", "handshake") for r in results}
    if "idle" in works:
        return IDLE_COLUMNS
    if works - {"handshake"}:
        return DATA_COLUMNS
    return {"held": HELD_COLUMNS, "resumption": RESUMPTION_COLUMNS}.get(scenario, COLUMNS)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "ok" if value else "**differ**"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 1 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _row(result: Results, columns: list[tuple[str, str]]) -> str:
    cell = result["cell"]
    values = []
    for _, key in columns:
        if key in cell and key not in result:
            values.append(_fmt(cell[key]) + (" ms" if key == "latency_ms" else ""))
        else:
            values.append(_fmt(result.get(key)))
    return "| " + " | ".join(values) + " |"


def _table(results: list[Results], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for result in results:
        if "skipped" in result:
            lines.append(
                f"| {result['cell']['mode']} | {_fmt(result['cell']['concurrency'])} | skipped: {result['skipped']} |"
            )
        else:
            lines.append(_row(result, columns))
    return lines


def add_floor_multiples(results: Results) -> None:
    for result in results["cells"]:
        cpu = result.get("server_cpu_us_per_handshake")
        if cpu:
            result["floor_multiple"] = cpu / floor_for(result["cell"], results["crypto_floor"])


def _find(
    results: Results, scenario: str, mode: str, concurrency: int | None = None, callback: str | None = None
) -> Results | None:
    for result in results["cells"]:
        cell = result["cell"]
        if cell["scenario"] == scenario and cell["mode"] == mode and "skipped" not in result:
            if (concurrency is None or cell["concurrency"] == concurrency) and callback in (None, cell["callback"]):
                return result
    return None


def _ratio(a: Results | None, b: Results | None, key: str) -> float | None:
    if a is None or b is None or not a.get(key) or not b.get(key):
        return None
    return float(a[key]) / float(b[key])


def _shown(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def _target(name: str, value: float | None, target: float, at_most: bool, note: str = "") -> dict[str, Any]:
    met = None if value is None else (value <= target if at_most else value >= target)
    if value is None:
        gap = "not measured in this run"
    elif met:
        gap = "met"
    elif at_most:
        gap = f"missed: {100 * (value / target - 1):.0f}% over the target"
    else:
        gap = f"missed: {100 * (1 - value / target):.0f}% short of the target"
    return {
        "name": name,
        "value": value,
        "target": f"{'≤' if at_most else '≥'} {target:g}",
        "met": met,
        "gap": gap,
        "note": note,
    }


CPU_PER_HANDSHAKE = "server_cpu_us_per_handshake"
CPU_PER_UNIT = "server_cpu_us_per_unit"


def _data_targets(results: Results) -> list[dict[str, Any]]:
    """The data-path targets: pausetls (gevent) against gevent + gevent.ssl in the same run."""
    scenarios = ("echo-1k", "echo-16k", "bulk", "idle", "http", "http-latency")
    ours = {s: _find(results, s, "pausetls-gevent") for s in scenarios}
    anchor = {s: _find(results, s, "stdlib-gevent") for s in ours}
    http, alone = ours["http"], ours["http-latency"]
    return [
        _target(
            "echo 1 KB: server CPU per round trip, pausetls / gevent.ssl",
            _ratio(ours["echo-1k"], anchor["echo-1k"], CPU_PER_UNIT),
            0.9,
            True,
        ),
        _target(
            "echo 16 KB: server CPU per round trip, pausetls / gevent.ssl",
            _ratio(ours["echo-16k"], anchor["echo-16k"], CPU_PER_UNIT),
            1.0,
            True,
        ),
        _target(
            "bulk: server CPU per GB, pausetls / gevent.ssl",
            _ratio(ours["bulk"], anchor["bulk"], CPU_PER_UNIT),
            1.0,
            True,
        ),
        _target(
            "RSS per idle established connection, pausetls / gevent.ssl",
            _ratio(ours["idle"], anchor["idle"], "rss_per_connection_kib"),
            1.0,
            True,
            f"{ours['idle']['cell']['concurrency'] if ours['idle'] else '-'} connections",
        ),
        _target(
            "keep-alive HTTPS requests/s per core of server CPU, pausetls WSGIServer / gevent.pywsgi + gevent.ssl",
            _ratio(anchor["http"], http, CPU_PER_UNIT),  # the inverse of server CPU per request
            1.2,
            False,
            "both with TCP_NODELAY; the stable form of the requests/s target on a shared machine",
        ),
        _target(
            "keep-alive HTTPS requests/s as the clients saw them, pausetls WSGIServer / gevent.pywsgi + gevent.ssl",
            _ratio(http, anchor["http"], "units_per_s"),
            1.2,
            False,
            "neither server is saturated: this follows the load processes' share of the CPUs",
        ),
        _target(
            "keep-alive HTTPS p50 latency through WSGIServer, one client, ms",
            None if alone is None else alone["p50_ms"],
            1.0,
            True,
        ),
    ]


def headline(results: Results) -> list[dict[str, Any]]:
    """The ratios the issue asks for, each against its target."""
    gevent = "pausetls-gevent"
    plain = _ratio(_find(results, "crypto", gevent), _find(results, "crypto", "nginx"), "server_cpu_us_per_handshake")
    mtls = _ratio(
        _find(results, "crypto-mtls", gevent), _find(results, "crypto-mtls", "nginx"), "server_cpu_us_per_handshake"
    )
    overhead = _ratio(
        _find(results, "pause-overhead", gevent), _find(results, "crypto-mtls", gevent), "server_cpu_us_per_handshake"
    )
    sweep = [r for r in results["cells"] if r["cell"]["scenario"] == "concurrency" and "skipped" not in r]
    levels = sorted({r["cell"]["concurrency"] for r in sweep if r["cell"]["concurrency"] <= 2000})
    level = levels[-1] if levels else None
    at = {mode: _find(results, "concurrency", mode, level) for mode in MODES}
    latency = at[gevent]["cell"]["latency_ms"] if at[gevent] else 100
    where = f"{latency} ms callback latency, {level} clients"
    both = [
        r["cell"]["concurrency"] for r in results["cells"] if r["cell"]["scenario"] == "held" and "skipped" not in r
    ]
    held_level = max((c for c in both if _find(results, "held", "pausetls-threads", c)), default=None)
    held = {mode: _find(results, "held", mode, held_level) for mode in (gevent, "pausetls-threads")}
    return [
        *_data_targets(results),
        _target(
            "server CPU per full handshake, pausetls (gevent) / gevent + stdlib ssl, no client certificate",
            _ratio(_find(results, "crypto", gevent), _find(results, "crypto", "stdlib-gevent"), CPU_PER_HANDSHAKE),
            1.0,
            True,
        ),
        _target(
            "server CPU per full handshake, pausetls (gevent) / nginx, no client certificate", plain, 1.3, True, ""
        ),
        _target("server CPU per full handshake, pausetls (gevent) / nginx, client certificate", mtls, 1.25, True, ""),
        _target(
            "pause overhead at zero latency: server CPU with a verify callback that returns at once / without one",
            overhead,
            1.02,
            True,
            "pausetls (gevent), client certificate",
        ),
        _target(
            f"handshakes/s, pausetls (gevent) / thread per connection, {where}",
            _ratio(at[gevent], at["pausetls-threads"], "handshakes_per_s"),
            1.5,
            False,
        ),
        _target(
            f"RSS growth, pausetls (gevent) / thread per connection, {where}",
            _ratio(at[gevent], at["pausetls-threads"], "rss_growth_mib"),
            0.5,
            True,
        ),
        _target(
            f"RSS per paused handshake, pausetls (gevent) / thread per connection, {held_level} held at once",
            _ratio(held[gevent], held["pausetls-threads"], "rss_per_paused_kib"),
            0.6,
            True,
            "the same ratio where both really hold every handshake open (held scenario)",
        ),
        _target(
            f"handshakes/s, pausetls (gevent) x{CORES} pre-fork workers / thread per connection, {where}",
            _ratio(at["pausetls-gevent-xN"], at["pausetls-threads"], "handshakes_per_s"),
            1.5,
            False,
            "like for like: both use every core",
        ),
        _target(
            f"handshakes/s, pausetls (gevent) / pool of 256 threads, {where}",
            _ratio(at[gevent], at["pausetls-pool256"], "handshakes_per_s"),
            3.0,
            False,
        ),
        *_resumption_targets(results),
    ]


def _resumption_targets(results: Results) -> list[dict[str, Any]]:
    """Server CPU per resumed handshake: pausetls's tickets against nginx's, against gevent + stdlib ssl's
    built-in tickets (what the same loop pays without pausetls), and against a memcached store."""
    tickets, store, stdlib, nginx = (
        _find(results, "resumption", mode, callback=kind)
        for mode, kind in (
            ("pausetls-gevent", "tickets"),
            ("pausetls-gevent", "memcached"),
            ("stdlib-gevent", "tickets"),
            ("nginx", "tickets"),
        )
    )
    cpu = "server_cpu_us_per_handshake"
    return [
        _target(
            "server CPU per resumed handshake, pausetls tickets / nginx tickets",
            _ratio(tickets, nginx, cpu),
            1.3,
            True,
            f"gevent + stdlib ssl's own tickets / nginx: {_shown(_ratio(stdlib, nginx, cpu))} (the floor of a "
            "gevent server)",
        ),
        _target(
            "server CPU per resumed handshake, pausetls tickets / gevent + stdlib ssl built-in tickets",
            _ratio(tickets, stdlib, cpu),
            1.0,
            True,
            "what pausetls adds to the loop it runs on",
        ),
        _target(
            "server CPU per resumed handshake, pausetls tickets / pausetls memcached store",
            _ratio(tickets, store, cpu),
            1.0,
            True,
            "below 1: tickets are cheaper",
        ),
    ]


def markdown(results: Results) -> str:
    machine = results["machine"]
    floor = results["crypto_floor"]
    lines = [
        f"# pausetls benchmark: {results['profile']} profile",
        "",
        f"Command: `{results['command']}` ({results['elapsed_s'] / 60:.1f} minutes, {machine['date']})",
        "",
        f"Machine: {machine['cpus']} x {machine['cpu']}, {machine['memory_gib']} GiB, Linux {machine['kernel']}, "
        f"Python {machine['python']}, gevent {machine['libraries']['gevent']}, "
        f"RLIMIT_NOFILE {machine['rlimit_nofile']}.",
        f"OpenSSL: pausetls {machine['pausetls_openssl']}; stdlib ssl {machine['stdlib_ssl_openssl']}; "
        f"nginx {machine['nginx'] or 'not run'}.",
        f"Certificates: {results['key_type']} (server sends leaf + intermediate; client certificates likewise). "
        "TLS 1.3, X25519.",
        "",
        f"Crypto floor (`{floor['command']}`, µs per handshake): "
        + ", ".join(f"{kind} {us:.0f}" for kind, us in floor["us_per_handshake"].items())
        + ".",
        "",
        "## Headline ratios and targets",
        "",
        "| ratio | value | target | result |",
        "|---|---|---|---|",
    ]
    for row in results["headline"]:
        name = f"{row['name']} ({row['note']})" if row["note"] else row["name"]
        lines.append(f"| {name} | {_shown(row['value'])} | {row['target']} | {row['gap']} |")
    for scenario in results["scenarios"]:
        cells = [r for r in results["cells"] if r["cell"]["scenario"] == scenario["name"]]
        if not cells:
            continue
        lines += ["", f"## {scenario['title']}", ""]
        lines += _table(cells, _columns(scenario["name"], cells))
    if results["notes"]:
        lines += ["", "## Skipped and stopped", ""] + [f"- {note}" for note in results["notes"]]
    lines += ["", "## How to read it", "", *results["method"]]
    return "\n".join(lines) + "\n"


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 4, figsize=(22, 10))
    (rate_axis, rss_axis, held_axis, resumption_axis), (*data_axes, spare_axis) = axes
    spare_axis.set_visible(False)
    _plot_data(results, data_axes)
    for mode in MODES:
        sweep = sorted(
            (r["cell"]["concurrency"], r)
            for r in results["cells"]
            if r["cell"]["scenario"] == "concurrency" and r["cell"]["mode"] == mode and "skipped" not in r
        )
        if sweep:
            xs = [c for c, _ in sweep]
            rate_axis.plot(xs, [r["handshakes_per_s"] for _, r in sweep], marker="o", label=mode)
            rss_axis.plot(xs, [r["peak_rss_mib"] for _, r in sweep], marker="o", label=mode)
        held = sorted(
            (r["cell"]["concurrency"], r)
            for r in results["cells"]
            if r["cell"]["scenario"] == "held" and r["cell"]["mode"] == mode and "skipped" not in r
        )
        if held:
            held_axis.plot(
                [r["peak_paused"] for _, r in held], [r["rss_growth_mib"] for _, r in held], marker="o", label=mode
            )
    latency = next((r["cell"]["latency_ms"] for r in results["cells"] if r["cell"]["scenario"] == "concurrency"), 0)
    for axis, title, ylabel in (
        (rate_axis, f"Handshakes/s, {latency} ms verify callback, client cert", "handshakes/s"),
        (rss_axis, "Server peak RSS, same cells", "MiB"),
        (held_axis, "RSS growth with handshakes paused at once", "MiB"),
    ):
        axis.set_title(title)
        axis.set_ylabel(ylabel)
        axis.set_xscale("log")
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_lines():
            axis.legend(fontsize="small")
    rate_axis.set_xlabel("concurrent clients")
    rss_axis.set_xlabel("concurrent clients")
    held_axis.set_xlabel("handshakes paused in a callback (server's own count)")
    machine = results["machine"]
    _plot_resumption(results, resumption_axis)
    figure.suptitle(f"pausetls benchmark ({results['profile']}), {machine['cpus']} CPUs, {machine['pausetls_openssl']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_resumption(results: Results, axis: Any) -> None:
    """Bars: server µs per resumed handshake for each (mode, resumption) of the resumption scenario."""
    cells = [r for r in results["cells"] if r["cell"]["scenario"] == "resumption" and "skipped" not in r]
    labels = [f"{r['cell']['mode']}\n{r['cell']['callback']}" for r in cells]
    axis.bar(labels, [r["server_cpu_us_per_handshake"] or 0 for r in cells])
    axis.set_title("Server CPU per resumed handshake")
    axis.set_ylabel("µs")
    axis.grid(True, axis="y", alpha=0.3)


DATA_SCENARIOS = ("echo-1k", "echo-16k", "bulk", "http")


def _plot_data(results: Results, axes: Any) -> None:
    """The data-path cells: server CPU per unit against gevent.ssl, idle memory, keep-alive requests/s."""
    cpu_axis, idle_axis, http_axis = axes
    for offset, mode in enumerate(("pausetls-gevent", "nginx")):
        ratios = [
            (i, _ratio(_find(results, name, mode), _find(results, name, "stdlib-gevent"), CPU_PER_UNIT))
            for i, name in enumerate(DATA_SCENARIOS)
        ]
        shown = [(i + 0.4 * offset, r) for i, r in ratios if r]
        if shown:
            cpu_axis.bar([x for x, _ in shown], [r for _, r in shown], width=0.4, label=mode)
    cpu_axis.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    cpu_axis.set_xticks(range(len(DATA_SCENARIOS)), DATA_SCENARIOS)
    cpu_axis.set_title("Server CPU per unit of work / gevent + gevent.ssl's")
    if cpu_axis.containers:
        cpu_axis.legend(fontsize="small")
    for axis, scenario, key, title in (
        (idle_axis, "idle", "rss_per_connection_kib", "RSS per idle established connection, KiB"),
        (http_axis, "http", "units_per_s", "Keep-alive HTTPS requests/s"),
    ):
        found = [(m, _find(results, scenario, m)) for m in MODES]
        bars = [(m, r[key]) for m, r in found if r and r.get(key)]
        axis.bar([m for m, _ in bars], [v for _, v in bars])
        axis.set_title(title)
        axis.tick_params(axis="x", labelsize="small")


def write(results: Results, out_dir: Path) -> dict[str, Path]:
    add_floor_multiples(results)
    results["headline"] = headline(results)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "plot": out_dir / "results.png"}
    paths["json"].write_text(json.dumps(results, indent=1) + "\n")
    paths["markdown"].write_text(markdown(results))
    plot(results, paths["plot"])
    return paths
