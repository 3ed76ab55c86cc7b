"""A list read on the event loop, PostgreSQL, in one process: the hub's CPU per read, apart from
HTTP, the client and the scheduling of the machine's cores (which made the same comparison
under `bench_reads.py --client wrk` vary by ±20 % from run to run on a loaded machine).

A fresh PostgreSQL database (created and dropped here) holds a researcher, `--nodes` nodes and
`--studies` finished studies (`bench_reads.seed`). On one event loop, the study list and the
node list are read `--reads` times each by two paths, in interleaved rounds:
  baseline  the path before the twelfth session: SQLAlchemy's asyncio engine (read-only,
            autocommit, two connections), the connection taken, read and given back in one of
            its greenlets (`greenlet_spawn`, as `AsyncConnection.run_sync` runs one);
  raw       `PostgresReads.read` as the hub runs it (`federation/hub/loopreads.py`): the
            statement compiled once, sent by psycopg's own asyncio connection.
Both return the same list (checked at each round). CPU (`time.process_time`) per read, median
of `--rounds`.

    python benchmarks/load/bench_loopreads.py --reads 2000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from anyio import CapacityLimiter
from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from benchmarks.load.bench_reads import database, seed  # noqa: E402

from ccdp.federation.hub.app import Hub  # noqa: E402
from ccdp.federation.hub.db import LIST_CONNECTIONS, open_database, read_only_options  # noqa: E402
from ccdp.federation.hub.loopreads import Listing, PostgresReads, loop_reads_for  # noqa: E402
from ccdp.federation.hub.service import STUDY_LIST  # noqa: E402

Read = Callable[..., Awaitable[Any]]


def engine_path(url: Any) -> tuple[Read, AsyncEngine]:
    """The baseline: the lists' SQLAlchemy asyncio engine, as the hub read them before."""
    base, options = read_only_options(url)
    engine = create_async_engine(
        base,
        pool_size=LIST_CONNECTIONS,
        max_overflow=0,
        isolation_level="AUTOCOMMIT",
        connect_args={"options": options},
    )
    turns = CapacityLimiter(LIST_CONNECTIONS)

    def on_connection(sync: Engine, listing: Listing[Any], viewer: Any) -> Any:
        conn: Connection
        with sync.connect() as conn:
            return listing.on(conn, viewer)

    async def read(listing: Listing[Any], viewer: Any) -> Any:
        async with turns:
            return await greenlet_spawn(on_connection, engine.sync_engine, listing, viewer)

    return read, engine


async def compare(
    hub: Hub, token: str, reads: int, rounds: int
) -> dict[tuple[str, str], list[float]]:
    """CPU ms per read of each (path, list), one entry per round."""
    who = hub.authenticate(token)
    bind = hub.sessions.kw["bind"]
    loop_reads = loop_reads_for(bind)
    assert isinstance(loop_reads, PostgresReads), "a PostgreSQL database"
    baseline, engine = engine_path(bind.url)
    paths: dict[str, Read] = {"baseline: SQLAlchemy asyncio engine": baseline}
    paths["raw: PostgresReads.read (psycopg)"] = loop_reads.read
    lists = {"studies": STUDY_LIST, "nodes": hub.node_list}
    out: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for path, run in paths.items():
            for name, listing in lists.items():
                assert await run(listing, who) == await baseline(listing, who)
                t = time.process_time()
                for _ in range(reads):
                    await run(listing, who)
                out.setdefault((path, name), []).append(1e3 * (time.process_time() - t) / reads)
    await loop_reads.close()
    await engine.dispose()
    await hub.tokens.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reads", type=int, default=2000, help="reads per list, path and round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--studies", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, database("postgres", Path(d)) as url:
        key = Path(d) / "hub.key"
        token = seed(url, key, args.nodes, args.studies)
        hub = Hub(open_database(url, key), open_studies=True)
        figures = asyncio.run(compare(hub, token, args.reads, args.rounds))
        hub.sessions.kw["bind"].dispose()
    print(f"{args.studies} studies, {args.nodes} nodes; CPU ms per read, median of {args.rounds}")
    for (path, name), ms in figures.items():
        print(
            f"  {path:38s} {name:8s} {statistics.median(ms):.3f} "
            f"(min {min(ms):.3f}, max {max(ms):.3f})"
        )


if __name__ == "__main__":
    main()
