"""Peak memory of a benchmark's child process, read where Linux keeps the child's own figure.

`ru_maxrss` is carried across fork and exec: a child started by a parent that built a large data
set reports the parent's peak, not its own. `VmHWM` in /proc/self/status is the process's own
high-water mark. Child scripts import this module by path (the benchmarks folder is not a package).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent  # put on sys.path by a child to import this module


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (VmHWM; Linux only)."""
    status = Path("/proc/self/status").read_text()
    kib = status.split("VmHWM:")[1].split()[0]
    return int(kib) / 1024


def cpu_seconds() -> float:
    """CPU time of this process and of the worker processes it waited for."""
    return sum(
        u.ru_utime + u.ru_stime
        for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def measured(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`fn()`'s figures with its wall and CPU seconds and this process's peak RSS (MiB)."""
    cpu0, t = cpu_seconds(), time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    return dict(out, seconds=seconds, cpu=cpu_seconds() - cpu0, peak_rss_mib=peak_rss_mib())


def child_prelude() -> str:
    """The first lines of a child script: `measured` (and json, sys, time) imported from here."""
    return f"import json, sys, time\nsys.path.insert(0, {str(HERE)!r})\nfrom peak import measured\n"
