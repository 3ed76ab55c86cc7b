"""The loop's own PostgreSQL connections (looppg.py), shared by the token check and the lists:
served in the order requests came, whatever arrives while a connection is given back, and a
place freed by a closed connection reopened for the next waiter."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ccdp.federation.hub.looppg import LoopConnections
from tests.federation.pg import temporary_database


def pool_on(url: str, most: int) -> LoopConnections:
    return LoopConnections(url.replace("+psycopg", ""), most)


@pytest.mark.postgres
def test_a_connection_given_back_goes_to_the_longest_waiter_not_a_newcomer() -> None:
    """One connection, held by A; B waits for it. A request C arrives just before A gives it
    back (scheduled ahead of B's wake-up). B must be served first: a connection left idle for
    B to find was taken by C, and B, queued again at the back, could wait without end."""
    with temporary_database() as url:
        pool = pool_on(url, most=1)
        served: list[str] = []

        async def scenario() -> list[str]:
            late: list[asyncio.Task[str]] = []

            async def read_as(name: str) -> str:
                async def read(conn: Any) -> str:
                    await (await conn.execute("SELECT 1")).fetchone()
                    served.append(name)
                    return name

                return await pool.run(read)

            release = asyncio.Event()

            async def hold(conn: Any) -> str:
                await release.wait()
                late.append(asyncio.create_task(read_as("C")))  # runs before B is woken
                served.append("A")
                return "A"

            a = asyncio.create_task(pool.run(hold))
            while pool.taken == 0:  # until A has its connection
                await asyncio.sleep(0.01)
            b = asyncio.create_task(read_as("B"))
            await asyncio.sleep(0.05)  # B is waiting
            release.set()
            await asyncio.wait_for(asyncio.gather(a, b, *late), timeout=10)
            await asyncio.wait_for(asyncio.gather(*late), timeout=10)
            assert pool.opened == 1 and pool.taken == 0
            await pool.close()
            return served

        assert asyncio.run(scenario()) == ["A", "B", "C"]


@pytest.mark.postgres
def test_fifty_readers_on_two_connections_are_served_in_arrival_order() -> None:
    """Each reader holds its connection 2 ms; arriving every millisecond, so that connections
    are given back while others arrive, they are granted one in the order they came, on no more
    than two connections."""
    with temporary_database() as url:
        pool = pool_on(url, most=2)
        served: list[int] = []

        async def scenario() -> list[int]:
            async def read_as(i: int) -> int:
                async def read(conn: Any) -> int:
                    served.append(i)  # the order connections were granted in
                    await (await conn.execute("SELECT pg_sleep(0.002)")).fetchone()
                    return i

                return await pool.run(read)

            async def hold_a_moment(conn: Any) -> None:
                await asyncio.sleep(0.05)

            # both connections opened first: two opening at once may be ready in either order
            await asyncio.gather(pool.run(hold_a_moment), pool.run(hold_a_moment))
            assert pool.opened == 2 and pool.taken == 0
            tasks = []
            for i in range(50):
                tasks.append(asyncio.create_task(read_as(i)))
                await asyncio.sleep(0.001)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
            assert pool.opened <= 2 and pool.taken == 0
            await pool.close()
            return served

        assert asyncio.run(scenario()) == list(range(50))
