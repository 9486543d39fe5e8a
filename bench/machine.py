"""The machine a run was measured on, and the limits that decide how far each mode can go."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import ssl
from importlib import metadata
from typing import Any

import pausetls
from bench.nginx import nginx_version
from bench.plan import THREAD_POOLS, Cell

RAISE_HARD_LIMIT = "raise the hard limit (ulimit -Hn, /etc/security/limits.conf or systemd's LimitNOFILE)"


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def thread_limit() -> int:
    """Threads one process can have: the smaller of the kernel's threads-max and pid_max."""
    values = [int(v) for v in (_read("/proc/sys/kernel/threads-max"), _read("/proc/sys/kernel/pid_max")) if v.strip()]
    return min(values) if values else 1 << 15


def why_not(cell: Cell, nofile: int, load_processes: int) -> str | None:
    """Why the machine cannot run *cell* (with the fix), or None."""
    pool = THREAD_POOLS.get(cell.mode, 0)
    # a thread-per-connection server holds the socket and the thread driver's wake pipe per connection
    per_connection = 3 if cell.mode == "pausetls-threads" else 1
    server = per_connection * cell.concurrency + 2 * (pool or 0) + 64
    clients = cell.concurrency // load_processes + 64
    if max(server, clients) > nofile:
        return (
            f"needs about {max(server, clients)} file descriptors in one process, RLIMIT_NOFILE is {nofile}: "
            f"{RAISE_HARD_LIMIT}"
        )
    if cell.mode == "pausetls-threads" and cell.concurrency + 64 > thread_limit():
        return f"needs {cell.concurrency} threads, the kernel allows {thread_limit()}: raise kernel.threads-max/pid_max"
    return None


def describe(nginx: str | None, nofile: int) -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    meminfo = _read("/proc/meminfo").split()
    memory_gib = int(meminfo[1]) / 2**20 if len(meminfo) > 1 else 0.0
    versions = {name: metadata.version(name) for name in ("gevent", "greenlet", "cffi")}
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pausetls": pausetls.__version__,
        "pausetls_openssl": pausetls.openssl_version(),
        "stdlib_ssl_openssl": ssl.OPENSSL_VERSION,
        "nginx": nginx_version(nginx) if nginx else None,
        "libraries": versions,
        "rlimit_nofile": nofile,
        "thread_limit": thread_limit(),
    }
