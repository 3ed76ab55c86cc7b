"""N hub workers share the PostgreSQL server's connections (issue 27): each worker's pool is sized
so that all of them, with their listening and token-check connections, fit in `max_connections`
beside the reserved slots and room for the CLI; too many workers for the server are refused in one
line before any starts. (4 workers at the one-worker pool opened up to 124 connections, and
PostgreSQL's default 100 refused the rest: 5xx under load.)"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from ccdp.federation.hub.db import (
    HEADROOM,
    LIST_CONNECTIONS,
    MAX_OVERFLOW,
    POOL_SIZE,
    HubDatabaseError,
    make_engine,
    worker_pools,
)
from ccdp.federation.hub.server import HubServeError, serve
from ccdp.federation.hub.tokenbook import CONNECTIONS as TOKEN_CONNECTIONS
from tests.federation.pg import temporary_database


def server_limits(db: str) -> tuple[int, int]:
    with psycopg.connect(db.replace("+psycopg", ""), autocommit=True) as conn:
        most = conn.execute("SHOW max_connections").fetchone()
        reserved = conn.execute("SHOW superuser_reserved_connections").fetchone()
    assert most and reserved
    return int(most[0]), int(reserved[0])


def test_every_workers_pool_fits_the_server() -> None:
    with temporary_database() as db:
        most, reserved = server_limits(db)
        for workers in (1, 2, 3, 4, 6):
            kept, overflow = worker_pools(db, workers)
            assert kept >= 2 and overflow >= 0
            assert (kept, overflow) <= (POOL_SIZE, MAX_OVERFLOW)
            each = kept + overflow + 1 + TOKEN_CONNECTIONS + LIST_CONNECTIONS
            assert workers * each + HEADROOM + reserved <= most, workers
        if most >= 100:  # a server at its default gives one or two workers the full pool
            assert worker_pools(db, 2) == (POOL_SIZE, MAX_OVERFLOW)
        with pytest.raises(HubDatabaseError, match=r"raise max_connections or run fewer"):
            worker_pools(db, most)


def test_the_engine_keeps_the_pool_it_is_given() -> None:
    with temporary_database() as db:
        engine = make_engine(db, (3, 2))
        try:
            assert (engine.pool.size(), engine.pool._max_overflow) == (3, 2)  # type: ignore[attr-defined]
        finally:
            engine.dispose()


def test_too_many_workers_are_refused_before_any_starts(tmp_path: Path) -> None:
    with temporary_database() as db:
        most, _reserved = server_limits(db)
        with pytest.raises(HubServeError, match=rf"max_connections = {most} leaves"):
            serve(db, port=0, workers=most, audit_key=tmp_path / "k")
