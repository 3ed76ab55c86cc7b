"""How much memory a node's DuckDB may hold before it spills to disk.

DuckDB's own default is 80% of the machine's memory for *each* database instance, and a node
process holds several (the snapshot of its view, a connection to its store) beside its pandas
frames: at 10 million tumours the defaults let one catalogue outgrow a 24 GiB machine. Each
connection the node reads its store through is therefore bounded to a share of the machine's
physical memory (`MEMORY_SHARE`, or `CCDP_DUCKDB_MEMORY`, e.g. `4GB`, set by the operator), and
spills what does not fit (large aggregates, sorts, materialised tables) to a folder beside the
store, which DuckDB creates when it first spills and removes when the connection closes.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

MEMORY_SHARE = 0.125  # of physical memory, per DuckDB instance: 3 GiB on a 24 GiB machine
MEMORY_FLOOR = 256 * 2**20  # a small machine still gets a workable buffer pool
MEMORY_ENV = "CCDP_DUCKDB_MEMORY"

_SPILLS = itertools.count()


def machine_memory() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit() -> str:
    """DuckDB's `memory_limit` for one of the node's connections (the operator's if set)."""
    chosen = os.environ.get(MEMORY_ENV, "").strip()
    if chosen:
        return chosen
    limit = max(MEMORY_FLOOR, int(machine_memory() * MEMORY_SHARE))
    return f"{limit // 2**20}MiB"


def spill_folder(store: Path) -> Path:
    """A folder of its own for one connection's spill files, beside the store (its disk is the
    one sized for the node's data; two connections never share one, as DuckDB removes it)."""
    store = Path(store)
    return store.with_name(f"{store.stem}.spill-{os.getpid()}-{next(_SPILLS)}")


def duckdb_config(store: Path) -> dict[str, str | bool | int | float | list[str]]:
    """`duckdb.connect(config=...)` for a connection reading `store`: bounded, spilling."""
    return {"memory_limit": memory_limit(), "temp_directory": str(spill_folder(store))}
