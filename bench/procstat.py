"""What the kernel says about a process: CPU time, resident memory, threads (Linux ``/proc``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    cpu_seconds: float  # user + system, all threads
    rss_bytes: int
    threads: int


def sample(pid: int) -> ProcSample:
    """One reading of *pid*; raises `ProcessLookupError` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
    except FileNotFoundError as exc:
        raise ProcessLookupError(pid) from exc
    # the command name (field 2) may hold spaces and parentheses: split after the last ")"
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    values = dict(line.split(b":", 1) for line in status.splitlines() if b":" in line)
    rss_kib = int(values.get(b"VmRSS", b"0 kB").split()[0])
    return ProcSample((utime + stime) / _TICKS, rss_kib * 1024, int(values[b"Threads"]))


def sample_all(pids: list[int]) -> ProcSample:
    """The sum over *pids* (nginx: master and worker)."""
    samples = [sample(pid) for pid in pids]
    return ProcSample(
        sum(s.cpu_seconds for s in samples), sum(s.rss_bytes for s in samples), sum(s.threads for s in samples)
    )


def children(pid: int) -> list[int]:
    """The direct children of *pid*."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(child) for child in f.read().split()]
        except FileNotFoundError:
            continue
    return found


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS


def machine_task_seconds() -> float:
    """CPU seconds the machine's processes have run (user, nice, system: not interrupts)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:4]]
    return sum(fields) / _TICKS
