"""The token check on the event loop: the one read every request makes, without a thread hop.

A request's token was checked in a worker thread through SQLAlchemy: under 50 clients that cost
1.2 ms of the hub's CPU a request (40 threads contending for the GIL and the pool, a thread hop
each way, SQLAlchemy's execution machinery), six times the rest of `/api/me`. The check is one
indexed read by the token's digest, so it is run where the request already is:

- on PostgreSQL, by psycopg's asyncio connection (the socket is awaited, never blocking the
  loop), on a few connections of its own (`CONNECTIONS` per worker: the loop runs one
  request's Python at a time, so more would only wait);
- on a SQLite file, by a connection of its own read on the loop: a local indexed read of a
  few microseconds, which in WAL mode no writer blocks;
- on anything else (an in-memory SQLite database only one connection can see), in a worker
  thread through the engine, as before.

Nothing is cached: every request reads the row, so a revocation refuses the very next request
in every process on the database (auth.py). A database that cannot be reached raises
`TokenStoreAway`, answered 503 like the engine's own errors.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from starlette.concurrency import run_in_threadpool

from ccdp.federation.hub.auth import (
    Holder,
    TokenKind,
    hash_token,
    holder_from_row,
    holder_of,
    tables,
)
from ccdp.federation.hub.looppg import DatabaseAway, LoopConnections, conninfo
from ccdp.federation.hub.models import NodeRow, UserRow

CONNECTIONS = 2  # PostgreSQL connections each worker keeps for token checks (db.worker_pools)
SQLITE_WAIT = 2.0  # seconds a SQLite read may wait on a lock (WAL: readers wait only on recovery)
_COLUMNS = {"node": "id, name, token_hash, last_seen", "user": "id, name, token_hash, role"}
_TABLE = {"node": NodeRow.__tablename__, "user": UserRow.__tablename__}


class TokenStoreAway(DatabaseAway):
    """The database holding the tokens cannot be reached right now (503: try again)."""


class TokenBook(Protocol):
    """Finds the live holder of a token, awaited on the event loop."""

    async def holder(self, token: str) -> Holder | None: ...

    async def close(self) -> None: ...


def _query(kind: TokenKind, mark: str) -> str:
    """The live row of table `kind` with the given digest (the unique index finds it)."""
    return (
        f"SELECT {_COLUMNS[kind]} FROM {_TABLE[kind]} "
        f"WHERE token_hash = {mark} AND revoked_at IS NULL"
    )


class ThreadBook:
    """The engine's read in a worker thread: for databases the others cannot open. `reads` is
    an engine that reads outside any transaction (`Members._reads`)."""

    def __init__(self, reads: Engine) -> None:
        self._reads = reads

    def _find(self, token: str) -> Holder | None:
        with self._reads.connect() as conn:
            return holder_of(conn, token)

    async def holder(self, token: str) -> Holder | None:
        return await run_in_threadpool(self._find, token)

    async def close(self) -> None:
        return None


class SqliteBook:
    """A SQLite file read on the loop by one connection of its own (opened at first use)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._sql = {k: _query(k, "?") for k in ("node", "user")}

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # any thread: a test client may run each app's loop in a thread of its own
            conn = sqlite3.connect(self._path, timeout=SQLITE_WAIT, check_same_thread=False)
            conn.isolation_level = None  # autocommit: each read sees the latest commit
            self._conn = conn
        return self._conn

    async def holder(self, token: str) -> Holder | None:
        digest = hash_token(token)
        try:
            conn = self._connection()
            for kind in tables(token):
                row = conn.execute(self._sql[kind], (digest,)).fetchone()
                found = holder_from_row(kind, row, digest)
                if found is not None:
                    return found
        except sqlite3.OperationalError as exc:  # locked past SQLITE_WAIT, or the file gone
            self._conn = None
            raise TokenStoreAway(f"the hub's database cannot be read: {exc}") from exc
        return None

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresBook:
    """Up to CONNECTIONS psycopg asyncio connections, opened when needed, on the running loop
    (looppg.py: a restart of the server costs no request a 503 once it is back up)."""

    def __init__(self, conninfo: str, connections: int = CONNECTIONS) -> None:
        self._pool = LoopConnections(conninfo, connections)
        self._sql = {k: _query(k, "%s") for k in ("node", "user")}

    async def _read(self, conn: Any, token: str) -> Holder | None:
        digest = hash_token(token)
        for kind in tables(token):
            cur = await conn.execute(self._sql[kind], (digest,))
            found = holder_from_row(kind, await cur.fetchone(), digest)
            if found is not None:
                return found
        return None

    async def holder(self, token: str) -> Holder | None:
        try:
            return await self._pool.run(lambda conn: self._read(conn, token))
        except DatabaseAway as exc:
            raise TokenStoreAway(str(exc)) from exc

    async def close(self) -> None:
        """Close the idle connections (those in use close when their read ends)."""
        await self._pool.close()


def sqlite_file(url: URL) -> str | None:
    """The path of a SQLite database file another connection can open; None for anything else
    (an in-memory database only its own connection sees, a `file:` URI, another server)."""
    if url.get_backend_name() != "sqlite":
        return None
    if url.database in (None, "", ":memory:") or url.database.startswith("file:"):
        return None
    return url.database


def book_for(engine: Engine) -> TokenBook:
    """The fastest way to read `engine`'s tokens on the loop (see the module's docstring);
    `engine` reads outside any transaction, as a check must see the latest commit."""
    url = engine.url
    path = sqlite_file(url)
    if path is not None:
        return SqliteBook(path)
    if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
        return PostgresBook(conninfo(url))
    return ThreadBook(engine)
