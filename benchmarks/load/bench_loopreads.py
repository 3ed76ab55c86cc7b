"""A list read on the event loop, PostgreSQL, in one process: the hub's CPU per read, apart from
HTTP, the client and the scheduling of the machine's cores (which made the same comparison
under `bench_reads.py --client wrk` vary by ±20 % from run to run on a loaded machine).

A fresh PostgreSQL database (created and dropped here) holds a researcher, `--nodes` nodes and
`--studies` finished studies (`bench_reads.seed`). On one event loop, the study list and the
node list are read `--reads` times each by two paths, in interleaved rounds:
  baseline  `AsyncEngine.connect()` then `AsyncConnection.run_sync(read)` then the close: the
            documented path (one greenlet each for the checkout, the read and the close);
  loop      `PostgresReads.read` as the hub runs it (`federation/hub/loopreads.py`).
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

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from benchmarks.load.bench_reads import database, seed  # noqa: E402

from ccdp.federation.hub.app import Hub  # noqa: E402
from ccdp.federation.hub.db import open_database  # noqa: E402
from ccdp.federation.hub.loopreads import PostgresReads, loop_reads_for  # noqa: E402

Read = Callable[..., Awaitable[Any]]


async def compare(
    hub: Hub, token: str, reads: int, rounds: int
) -> dict[tuple[str, str], list[float]]:
    """CPU ms per read of each (path, list), one entry per round."""
    who = hub.authenticate(token)
    loop_reads = loop_reads_for(hub.sessions.kw["bind"])
    assert isinstance(loop_reads, PostgresReads), "a PostgreSQL database with greenlet installed"
    engine, turns = loop_reads._engine()

    async def baseline(read: Callable[..., Any], *args: Any) -> Any:
        async with turns, engine.connect() as conn:
            return await conn.run_sync(read, *args)

    paths: dict[str, Read] = {"baseline: connect, run_sync, close": baseline}
    paths["loop: PostgresReads.read"] = loop_reads.read
    lists = {"studies": (hub.studies_in, (who,)), "nodes": (hub.nodes_in, ())}
    out: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for path, run in paths.items():
            for name, (read, args) in lists.items():
                assert await run(read, *args) == await baseline(read, *args)
                t = time.process_time()
                for _ in range(reads):
                    await run(read, *args)
                out.setdefault((path, name), []).append(1e3 * (time.process_time() - t) / reads)
    await loop_reads.close()
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
