"""Peak memory of a benchmark's child process, read where Linux keeps the child's own figure.

`ru_maxrss` is carried across fork and exec: a child started by a parent that built a large data
set reports the parent's peak, not its own. `VmHWM` in /proc/self/status is the process's own
high-water mark. Child scripts import this module by path (the benchmarks folder is not a package).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent  # put on sys.path by a child to import this module


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (VmHWM; Linux only)."""
    status = Path("/proc/self/status").read_text()
    kib = status.split("VmHWM:")[1].split()[0]
    return int(kib) / 1024
