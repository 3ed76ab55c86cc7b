"""The node's store as its answers read it: the analysis view materialised in memory once per
state of the store, beside copies of the few tables the node's own SQL reads.

Opening the store (a DuckDB connection and its ATTACH) and planning the view's long SQL cost
tens of milliseconds per query whatever the store's size, and a node paid them several times per
answer, every round of every study. A snapshot pays them once per state of the store file (its
size and modification time, and its write-ahead log's), so an ingest is seen by the next task;
and it detaches the store once copied, so a running node agent never holds a lock that would
block an ingest. The view is the one `cohort.view` defines: a query over the snapshot is the
same text with the view's subquery replaced by its materialised rows.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from ccdp.cohort.view import has_link_groups, view_sql
from ccdp.store.memory import duckdb_config

# The store tables the node's SQL reads beside the view: consent (data use), follow-up,
# specimens, the population (rates) and the link groups (dedup). Others are read through the view.
SNAPSHOT_TABLES = ("patient", "specimen", "population", "link_group")
VIEW_TABLE = '"store"."_view"'
MAX_SNAPSHOTS = 32

FileState = tuple[int, int]


@functools.cache
def view_text() -> str:
    """The view's subquery as `cohort_sql` embeds it (built once: it is long to build too)."""
    return f"({view_sql('store')})"


def file_state(path: Path) -> FileState:
    """(modification time in ns, size) of `path`, (0, 0) when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def store_state(store: Path) -> tuple[FileState, FileState]:
    """What a write to the store changes: the file's state and its write-ahead log's."""
    return file_state(store), file_state(Path(f"{store}.wal"))


@dataclass
class Snapshot:
    """An in-memory DuckDB holding database `store`: the view's rows for one node (`_view`) and
    copies of `SNAPSHOT_TABLES`. `cursor()` is thread-safe; `lock` guards what callers add to
    it (the keyed view, `keyed_salt`: the salt it was built with)."""

    con: duckdb.DuckDBPyConnection
    linked: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    keyed_salt: int | None = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    @staticmethod
    def over_view(sql: str, params: list[Any]) -> tuple[str, list[Any]] | None:
        """`sql` (a `cohort_sql` text, the node name its first parameter) read from the
        materialised view, without the node-name parameter; None when `sql` does not embed
        the view exactly once."""
        text = view_text()
        if sql.count(text) != 1:
            return None
        return sql.replace(text, VIEW_TABLE), params[1:]


_SNAPSHOTS: OrderedDict[tuple[str, str], tuple[tuple[FileState, FileState], Snapshot]] = (
    OrderedDict()
)
_LOCK = threading.Lock()


def snapshot(store: Path, node: str) -> Snapshot:
    """The snapshot of `store` as node `node` sees it now (built when the store changed since
    the last one); duckdb.Error when the store cannot be read."""
    key = (str(store.resolve()), node)
    state = store_state(store)  # before reading: a write after it makes the next call rebuild
    with _LOCK:
        held = _SNAPSHOTS.get(key)
        if held is None or held[0] != state:
            _SNAPSHOTS.pop(key, None)  # the old state's rows are not kept beside the new
            held = (state, _build(store, node))
            _SNAPSHOTS[key] = held
            while len(_SNAPSHOTS) > MAX_SNAPSHOTS:
                _SNAPSHOTS.popitem(last=False)
        _SNAPSHOTS.move_to_end(key)
        return held[1]


def _build(store: Path, node: str) -> Snapshot:
    con = duckdb.connect(config=duckdb_config(store))  # bounded: the view spills past it
    quoted = str(store).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS src (READ_ONLY)")
    try:
        con.execute("ATTACH ':memory:' AS store")
        con.execute(f"CREATE TABLE {VIEW_TABLE} AS {view_sql('src')}", [node])
        present = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'src'"
            ).fetchall()
        }
        for table in SNAPSHOT_TABLES:
            if table in present:
                con.execute(f'CREATE TABLE "store"."{table}" AS SELECT * FROM "src"."{table}"')
        linked = has_link_groups(con, "store")
    finally:
        con.execute("DETACH src")
    return Snapshot(con, linked)
