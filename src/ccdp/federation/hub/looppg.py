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
        self._waiting: deque[asyncio.Future[None]] = deque()

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
        """An idle connection (reused: True), else a new one if fewer than the most are open,
        else the next one given back."""
        loop = self._bind_loop()
        while not self._idle and self._open >= self._most:
            turn = loop.create_future()
            self._waiting.append(turn)
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._wake()  # woken, then cancelled: pass the turn on
                raise
        if self._idle:
            return self._idle.pop(), True
        self._open += 1
        try:
            return await self._connect(), False
        except BaseException:
            self._give_back(None)
            raise

    def _give_back(self, conn: Any) -> None:
        """Return `conn` to the idle list (None: it was closed, its place is free again).
        Never awaits, so a cancelled request cannot leave a place taken."""
        if conn is None:
            self._open -= 1
        else:
            self._idle.append(conn)
        self._wake()

    def _wake(self) -> None:
        """Let the longest-waiting request look again."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return

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
