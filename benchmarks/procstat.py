"""CPU seconds of processes, read from /proc (Linux): the benchmarks meter the hub's workers,
the node agents and the PostgreSQL server, which share the machine's cores with the client."""

from __future__ import annotations

import os
from pathlib import Path


def ticks(pid: int) -> int | None:
    """utime + stime of one process (None once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds these processes have used (/proc): on a loaded machine the
    CPU a study costs is steadier than its wall time."""
    return sum(ticks(pid) or 0 for pid in pids) / os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, str]]:
    """Every process's (parent pid, command name), from /proc."""
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, tail = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        out[int(entry.name)] = (int(tail.split()[1]), head.split("(", 1)[1])
    return out


def with_descendants(pid: int) -> list[int]:
    """`pid` and every process below it: a hub with `--workers N` is its N worker processes."""
    procs = processes()
    found, grew = {pid}, True
    while grew:
        below = {p for p, (parent, _) in procs.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return sorted(found)


def database_pids() -> list[int]:
    """The PostgreSQL server's processes (postmaster and backends): their CPU is part of what a
    study costs the machine when the hub's database is PostgreSQL."""
    return sorted(p for p, (_, name) in processes().items() if name == "postgres")
