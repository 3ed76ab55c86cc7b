"""The lists (studies, nodes) of a SQLite hub read on the event loop, not in a worker thread.

Under 50 clients a list read in a worker thread cost the hub 1.1-1.2 ms of CPU a request, of
which the read itself was 0.2 ms: the rest was the thread hop and the GIL passed between the
reading threads and the loop (benchmarks/README.md, "The lists on the loop"). A SQLite file in
WAL mode is read without waiting for any writer, so the read is run where the request already
is, by a connection of the loop's thread that nothing else uses:

- its own engine with one connection per thread (`SingletonThreadPool`): no pool shared with
  the writers' threads, so a burst of writes can never make the loop wait for a connection;
- autocommit: each read sees the latest commit, and leaves no transaction open;
- `query_only`: it cannot write, whatever runs on it;
- a short lock wait (`SQLITE_WAIT`): in WAL mode a reader waits only on a crash's recovery.

On PostgreSQL a read is a round trip to the server, which would stall every request on the
loop: there the lists stay in their worker threads (`routes.list_readers`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import SingletonThreadPool

from ccdp.federation.hub.tokenbook import SQLITE_WAIT, sqlite_file


def _read_only(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")
    cur.close()


def loop_reads_for(engine: Engine) -> Engine | None:
    """An engine whose reads may run on the event loop: a SQLite file's; None otherwise."""
    path = sqlite_file(engine.url)
    if path is None:
        return None
    loop = create_engine(
        engine.url,
        poolclass=SingletonThreadPool,
        connect_args={"check_same_thread": False, "timeout": SQLITE_WAIT},
        isolation_level="AUTOCOMMIT",
    )
    event.listen(loop, "connect", _read_only)
    return loop
