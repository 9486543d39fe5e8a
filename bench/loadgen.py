"""The load generator seen from the harness: `bench.load` processes that split a cell's clients."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.children import Child, ChildError, python_module_argv
from bench.pki import BenchPKI
from bench.plan import Cell

START_TIMEOUT = 30.0


def _expect(reply: dict[str, Any], event: str) -> dict[str, Any]:
    if reply.get("event") != event:
        raise ChildError(f"a load process answered {reply.get('event')!r} where {event!r} was due")
    return reply


def _merge(replies: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"errors": {}, "error_samples": [], "latencies": []}
    for reply in replies:
        for key in ("ok", "units", "resumed", "abandoned", "window_ok", "window_resumed", "window_errors"):
            merged[key] = merged.get(key, 0) + reply[key]
        for name, count in reply["errors"].items():
            merged["errors"][name] = merged["errors"].get(name, 0) + count
        merged["error_samples"] += reply["error_samples"]
        merged["latencies"] += reply["latencies"]
    return merged


class LoadGenerator:
    """*processes* load processes, kept across cells (started once per run)."""

    def __init__(self, processes: int, log_dir: Path) -> None:
        self.children = [
            Child(python_module_argv("bench.load"), f"load process {i}", tempfile.TemporaryFile(dir=log_dir))
            for i in range(processes)
        ]
        self._running: list[Child] = []

    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    def start(self, cell: Cell, pki: BenchPKI, port: int, *, ramp: float, per_client: int | None = None) -> None:
        """Start *cell.concurrency* clients against *port*, split evenly over the processes."""
        count = len(self.children)
        shares = [cell.concurrency // count + (i < cell.concurrency % count) for i in range(count)]
        paths = {k: str(v) for k, v in asdict(pki).items()}
        self._running = []
        for child, share in zip(self.children, shares, strict=True):
            if share:
                command = {"cmd": "run", "port": port, "clients": share, "cell": cell.as_dict(), "pki": paths}
                child.send({**command, "ramp": ramp, "per_client": per_client})
                self._running.append(child)
        for child in self._running:
            _expect(child.receive(START_TIMEOUT), "started")

    def stop(self, window: tuple[float, float], drain: float) -> dict[str, Any]:
        """Stop the clients; what they did overall and inside *window*."""
        return self._stop(list(window), drain, drain + 30)

    def wait_done(self, timeout: float) -> dict[str, Any]:
        """With ``per_client``: wait until every client has made its connections; what they did."""
        return self._stop([0.0, 1e300], None, timeout)

    def _stop(self, window: list[float], drain: float | None, timeout: float) -> dict[str, Any]:
        for child in self._running:
            child.send({"cmd": "stop", "window": window, "drain": drain})
        replies = [_expect(child.receive(timeout), "done") for child in self._running]
        self._running = []
        return _merge(replies)

    def close(self) -> None:
        for child in self.children:
            child.stop()
