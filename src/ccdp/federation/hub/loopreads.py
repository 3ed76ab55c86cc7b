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
- PostgreSQL is read by psycopg's asyncio connections through SQLAlchemy's asyncio engine
  (`db.make_loop_engine`): the round trips are awaited, and the same functions, taking a
  `Connection`, build the same lists (the connection taken, read and given back in one of
  SQLAlchemy's greenlets, as `AsyncConnection.run_sync` runs one). One engine per event loop: an
  asyncio connection belongs to the loop that opened it.

Anything else (an in-memory SQLite database, greenlet not installed) keeps the worker threads
(`routes.list_readers`).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, cast
from weakref import WeakKeyDictionary

import sqlalchemy.util
from anyio import CapacityLimiter
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import SingletonThreadPool

from ccdp.federation.hub.db import LIST_CONNECTIONS, make_loop_engine
from ccdp.federation.hub.tokenbook import SQLITE_WAIT, sqlite_file

T = TypeVar("T")
# threads whose SQLite connections the loop engine keeps: past its size, SingletonThreadPool
# closes other threads' connections, even one mid-read (its default, 5, is reached by a test
# harness running a loop per client; `ccdp hub serve` runs one)
LOOP_THREADS = 64

# SQLAlchemy's own bridge from a coroutine to synchronous code that awaits in a greenlet (what
# `AsyncConnection.run_sync` calls); not in its documented API, so looked up, not imported: a
# release without it leaves the documented path (`PostgresReads.read`)
_SPAWN: Callable[..., Any] | None = getattr(sqlalchemy.util, "greenlet_spawn", None)


class LoopReads(Protocol):
    """Runs `read(conn, *args)` for a request, awaited on its event loop."""

    async def read(self, read: Callable[..., T], *args: Any) -> T: ...

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

    async def read(self, read: Callable[..., T], *args: Any) -> T:
        with self.engine.connect() as conn:
            return read(conn, *args)

    async def close(self) -> None:
        self.engine.dispose()


class PostgresReads:
    """PostgreSQL read by the loop's asyncio engine (see the module's docstring)."""

    def __init__(self, url: URL) -> None:
        self._url = url
        self._engines: WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[AsyncEngine, CapacityLimiter]
        ] = WeakKeyDictionary()

    def _engine(self) -> tuple[AsyncEngine, CapacityLimiter]:
        loop = asyncio.get_running_loop()
        held = self._engines.get(loop)
        if held is None:
            held = self._engines[loop] = (
                make_loop_engine(self._url),
                CapacityLimiter(LIST_CONNECTIONS),
            )
        return held

    async def read(self, read: Callable[..., T], *args: Any) -> T:
        """`read` on one of the loop's connections, taken in turn: the pool's own wait lets a
        newcomer take a connection given back before those already waiting (under 50 clients
        a node list's p95 was 0.6 s with a median of 6 ms); anyio's limiter hands a place to
        the longest waiter."""
        engine, turns = self._engine()
        async with turns:
            if _SPAWN is not None:
                return cast(T, await _SPAWN(_on_connection, engine.sync_engine, read, args))
            async with engine.connect() as conn:
                return await conn.run_sync(read, *args)

    async def close(self) -> None:
        """Close this loop's connections (the server's shutdown, on its loop)."""
        held = self._engines.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[0].dispose()


def _on_connection(engine: Engine, read: Callable[..., T], args: Sequence[Any]) -> T:
    """A connection taken, read and given back in one greenlet: `AsyncEngine.connect`, `run_sync`
    and the close took one each, 12-19 % more CPU a list (benchmarks/load/bench_loopreads.py)."""
    with engine.connect() as conn:
        return read(conn, *args)


def loop_reads_for(engine: Engine) -> LoopReads | None:
    """How `engine`'s lists are read on the event loop; None: in worker threads."""
    url = engine.url
    if sqlite_file(url) is not None:
        return SqliteReads(url)
    asyncio_ready = importlib.util.find_spec("greenlet") is not None
    if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
        return PostgresReads(url) if asyncio_ready else None
    return None
