"""A few of psycopg's asyncio connections, kept by a worker's event loop for the reads it awaits
(the token check, tokenbook.py; the lists, loopreads.py).

Raw psycopg rather than SQLAlchemy's asyncio engine: a token check through the engine cost
0.469 ms of the hub's CPU against 0.237 ms raw, and a study list 0.68-0.75 ms against 0.35-0.45
(benchmarks/README.md). The connections are opened when first needed, at most `most` of them;
a request finding none idle waits its turn (the longest waiter is served first: with a pool's
own wait, a newcomer could take a connection given back before those already waiting). A
connection broken while idle (the server restarted) is dropped and the read tried on the next
(at last a fresh one), so once the server is back up a restart costs no request a 503.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.engine import URL

from ccdp.errors import CcdpError

T = TypeVar("T")
CONNECT_TIMEOUT = 5  # seconds to open a PostgreSQL connection (the socket is awaited)
_PLACE = object()  # handed to a waiter: a place to open a connection in (one was closed)


class DatabaseAway(CcdpError):
    """The hub's database cannot be reached right now (answered 503: try again)."""


class LoopConnections:
    """Up to `most` psycopg asyncio connections (autocommit) on the running loop."""

    def __init__(self, conninfo: str, most: int, options: str = "") -> None:
        """`options`: libpq's `options` for each connection (e.g. read-only), if any."""
        self._conninfo = conninfo
        self._options = options
        self._most = most
        self._idle: list[Any] = []
        self._open = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()

    @property
    def opened(self) -> int:
        """Connections open or being opened (idle or in use)."""
        return self._open

    @property
    def taken(self) -> int:
        """Connections in use by a read now (a cancelled read must leave none)."""
        return self._open - len(self._idle)

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        """Connections belong to the loop that opened them: a new loop (a test's client, a
        restarted server) starts afresh, the old sockets closed without their loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            for conn in self._idle:
                conn.pgconn.finish()
            self._idle, self._open, self._waiting = [], 0, deque()
            self._loop = loop
        return loop

    async def _connect(self) -> Any:
        import psycopg

        extra: dict[str, Any] = {"options": self._options} if self._options else {}
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT, **extra
            )
        except psycopg.Error as exc:
            raise DatabaseAway(f"the hub's database cannot be reached: {exc}") from exc

    async def _take(self) -> tuple[Any, bool]:
        """An idle connection (reused: True), else a new one if fewer than the most are open;
        else wait for one handed over in turn (see `_give_back`)."""
        loop = self._bind_loop()
        if not any(not t.done() for t in self._waiting):  # no one waits before this request
            if self._idle:
                return self._idle.pop(), True
            if self._open < self._most:
                self._open += 1
                return await self._open_place(), False
        turn: asyncio.Future[Any] = loop.create_future()
        self._waiting.append(turn)
        try:
            handed = await turn
        except BaseException:
            if turn.done() and not turn.cancelled():  # handed over, then cancelled: pass it on
                self._give_back(None if turn.result() is _PLACE else turn.result())
            elif turn in self._waiting:
                self._waiting.remove(turn)
            raise
        if handed is _PLACE:
            return await self._open_place(), False
        return handed, True

    async def _open_place(self) -> Any:
        """A new connection in a place already counted in `_open` (freed again on failure)."""
        try:
            return await self._connect()
        except BaseException:
            self._give_back(None)
            raise

    def _give_back(self, conn: Any) -> None:
        """`conn` (None: it was closed, its place is free) goes straight to the longest
        waiter, else back to the idle list. Handed over, never left for the waiter to look
        for: a request arriving meanwhile would take it first, and the waiter, queued again
        at the back, could wait for ever (a p99 of 0.66 s under 50 clients, a median of 48
        ms). Never awaits, so a cancelled request cannot leave a place taken."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():  # a waiter cancelled but not yet run is passed over
                turn.set_result(_PLACE if conn is None else conn)
                return
        if conn is None:
            self._open -= 1
        else:
            self._idle.append(conn)

    async def run(self, read: Callable[[Any], Awaitable[T]]) -> T:
        """`read(connection)` on a connection taken in turn and given back; a connection that
        broke while idle is replaced and the read tried again (see the module's docstring)."""
        import psycopg

        while True:
            conn, reused = await self._take()
            try:
                found = await read(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._give_back(None)
                await conn.close()
                if reused:
                    continue  # broken while idle (a restart): try the next, at last a new one
                raise DatabaseAway(f"the hub's database cannot be read: {exc}") from exc
            except BaseException:
                self._give_back(None)  # cancelled or failed mid-read: its state is unknown
                conn.pgconn.finish()
                raise
            self._give_back(conn)
            return found

    async def close(self) -> None:
        """Close the idle connections (those in use close when their read ends)."""
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        same_loop = self._loop is asyncio.get_running_loop()
        for conn in idle:
            if same_loop:
                await conn.close()
            else:
                conn.pgconn.finish()


def conninfo(url: URL) -> str:
    """libpq's URI for the engine's URL (password and query options kept)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
