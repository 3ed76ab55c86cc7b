"""The lists (studies, nodes) read on the event loop, not in a worker thread.

Under 50 clients a list read in a worker thread cost the hub 1.1-1.3 ms of CPU a request, of
which the read itself was 0.2 ms: the rest was the thread hop and the GIL passed between the
reading threads and the loop (benchmarks/README.md, "The lists on the loop"). So the read runs
where the request already is, by connections nothing but the loop uses, never waiting:

- a SQLite file (WAL mode: a reader never waits for a writer) is read by its own engine with
  one connection per thread (`SingletonThreadPool`): no pool shared with the writers' threads,
  so a burst of writes can never make the loop wait for a connection; in autocommit, so each
  read sees the latest commit; `query_only`, so it cannot write; with a short lock wait (in WAL
  mode a reader waits only on a crash's recovery);
- PostgreSQL is read by psycopg's own asyncio connections (looppg.py), read-only and in
  autocommit: the list's one statement is compiled once by SQLAlchemy for the engine's dialect,
  then sent raw, its rows given the columns' result processing and their names. Through
  SQLAlchemy's asyncio engine (a greenlet bridging each await) the study list cost twice the CPU
  (benchmarks/load/bench_loopreads.py).

A list is a `Listing`: its statement, and how its rows make the list, so every path (the loop's
SQLite engine, psycopg, the worker threads) builds the same list from the same statement.
Anything else (an in-memory SQLite database) keeps the worker threads (`routes.list_readers`).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.pool import SingletonThreadPool
from sqlalchemy.sql import Executable

from ccdp.federation.hub.db import LIST_CONNECTIONS, read_only_options
from ccdp.federation.hub.looppg import LoopConnections, conninfo
from ccdp.federation.hub.tokenbook import SQLITE_WAIT, sqlite_file

T = TypeVar("T")
Query = tuple[Executable, Mapping[str, Any]]
# threads whose SQLite connections the loop engine keeps: past its size, SingletonThreadPool
# closes other threads' connections, even one mid-read (its default, 5, is reached by a test
# harness running a loop per client; `ccdp hub serve` runs one)
LOOP_THREADS = 64


@dataclass(frozen=True)
class Listing(Generic[T]):
    """A list read in one statement. `query(viewer)`: the statement and its parameters, or
    None when the viewer may see nothing (the list is then built from no rows); `build(rows)`:
    the list, reading each row's columns by name (`row.title`), as a SQLAlchemy row and the
    PostgreSQL path's rows both allow."""

    query: Callable[[Any], Query | None]
    build: Callable[[Iterable[Any]], T]

    def on(self, conn: Connection, viewer: Any) -> T:
        """Read on a SQLAlchemy connection (SQLite's loop engine, the worker threads)."""
        q = self.query(viewer)
        return self.build(() if q is None else conn.execute(q[0], dict(q[1])))


class LoopReads(Protocol):
    """Reads a `Listing` for a request, awaited on its event loop."""

    async def read(self, listing: Listing[T], viewer: Any) -> T: ...

    async def close(self) -> None: ...


def _read_only(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")
    cur.close()


class SqliteReads:
    """A SQLite file read on the loop's own read-only connection (see the module's docstring)."""

    def __init__(self, url: URL) -> None:
        self.engine = create_engine(
            url,
            poolclass=SingletonThreadPool,
            pool_size=LOOP_THREADS,
            connect_args={"check_same_thread": False, "timeout": SQLITE_WAIT},
            isolation_level="AUTOCOMMIT",
        )
        event.listen(self.engine, "connect", _read_only)

    async def read(self, listing: Listing[T], viewer: Any) -> T:
        with self.engine.connect() as conn:
            return listing.on(conn, viewer)

    async def close(self) -> None:
        self.engine.dispose()


class UnplannedStatement(ValueError):
    """A statement the PostgreSQL path cannot send as compiled once (an expanding IN)."""


class _Plan:
    """A statement compiled once for the dialect: its SQL, its parameters with their types'
    bind processing (a JSON path made an array literal), and each column's result processing,
    as SQLAlchemy would apply them (a TypeDecorator's included)."""

    def __init__(self, stmt: Executable, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
        if "POSTCOMPILE" in compiled.string:
            raise UnplannedStatement(f"rendered again at each execution: {compiled.string}")
        self.sql: str = compiled.string
        self._compiled = compiled
        binds = {
            name: p.type.dialect_impl(dialect).bind_processor(dialect)
            for name, p in compiled.binds.items()
        }
        self._binds = [(name, process) for name, process in binds.items() if process is not None]
        columns = getattr(stmt, "selected_columns", None)
        processors = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns or ()
        ]
        self._processors = [(i, p) for i, p in enumerate(processors) if p is not None]
        self._row: Any = None

    def params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(self._compiled.construct_params(dict(given)))
        for name, process in self._binds:
            if name in values:  # `binds` also holds each anonymous parameter's internal key
                values[name] = process(values[name])
        return values

    def rows(self, cur: Any, raw: list[tuple[Any, ...]]) -> list[Any]:
        """The raw rows processed, as named tuples of the cursor's column names (read from
        `cur.description` once a plan: psycopg builds that list anew at each access)."""
        if self._row is None:
            names = [d.name for d in cur.description or ()]
            self._row = namedtuple("ListedRow", names, rename=True)  # type: ignore[misc]
        make = self._row._make
        if not self._processors:
            return [make(r) for r in raw]
        out = []
        for r in raw:
            values = list(r)
            for i, process in self._processors:
                values[i] = process(values[i])
            out.append(make(values))
        return out


class PostgresReads:
    """PostgreSQL read raw by psycopg on the loop (see the module's docstring)."""

    def __init__(self, url: URL, dialect: Dialect) -> None:
        base, options = read_only_options(url)
        self.connections = LoopConnections(conninfo(base), LIST_CONNECTIONS, options)
        self._dialect = dialect
        self._plans: dict[Executable, _Plan] = {}

    def _plan(self, stmt: Executable) -> _Plan:
        plan = self._plans.get(stmt)
        if plan is None:
            plan = self._plans[stmt] = _Plan(stmt, self._dialect)
        return plan

    async def read(self, listing: Listing[T], viewer: Any) -> T:
        """The listing's one statement on one of the loop's connections, taken in turn."""
        q = listing.query(viewer)
        if q is None:
            return listing.build(())
        plan = self._plan(q[0])
        params = plan.params(q[1])

        async def fetch(conn: Any) -> list[Any]:
            cur = await conn.execute(plan.sql, params)
            return plan.rows(cur, await cur.fetchall())

        return listing.build(await self.connections.run(fetch))

    async def close(self) -> None:
        """Close this loop's idle connections (the server's shutdown, on its loop)."""
        await self.connections.close()


def loop_reads_for(engine: Engine) -> LoopReads | None:
    """How `engine`'s lists are read on the event loop; None: in worker threads."""
    url = engine.url
    if sqlite_file(url) is not None:
        return SqliteReads(url)
    if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
        return PostgresReads(url, engine.dialect)
    return None
