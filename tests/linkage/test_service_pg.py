"""The linkage service with its database on PostgreSQL (127.0.0.1:5432, a database created and
dropped here): two registries linked end to end by their nodes, the groups exactly the core's,
and afterwards no encoding in any row of any table, nor in the raw pages of the service's
tables (PostgreSQL keeps a deleted row's bytes in its page until the page is rewritten: the
service rewrites its tables with VACUUM FULL after linking and after a run is done)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.federation.pg import temporary_database
from tests.linkage.linkwire_kit import (
    LiveService,
    core_pairs,
    found_pairs,
    link_groups,
    partnership_copy,
    run_nodes,
    stored_clks,
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


def _connect(url: str) -> psycopg.Connection:
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True
    )


def _raw_pages(con: psycopg.Connection) -> bytes:
    """Every page of every table, index and TOAST table of the service's tables, as stored
    (live and dead rows alike), read with pageinspect."""
    rels = con.execute(
        "SELECT c.oid::regclass::text, c.relkind FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i') "
        "UNION SELECT t.oid::regclass::text, t.relkind FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class t ON t.oid = c.reltoastrelid "
        "WHERE n.nspname = 'public'"
    ).fetchall()
    out = []
    for name, _kind in rels:
        (size,) = con.execute("SELECT pg_relation_size(%s::regclass)", [name]).fetchone()
        for block in range(size // 8192):
            (page,) = con.execute("SELECT get_raw_page(%s, %s)", [name, block]).fetchone()
            out.append(bytes(page))
    return b"".join(out)


def test_the_probe_sees_a_deleted_row_until_vacuum_full(pg_url: str) -> None:
    """Why the service vacuums: a deleted row's bytes stay in its page after DELETE and after a
    plain VACUUM; VACUUM FULL rewrites the table without them."""
    con = _connect(pg_url)
    with con:
        con.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        con.execute("CREATE TABLE probe (id int, clk bytea)")
        secret = bytes(range(7, 135))
        # the deleted row is the later one: a plain VACUUM compacts the page towards its end,
        # which moves the earlier row over nothing and leaves the freed bytes as they were
        con.execute("INSERT INTO probe VALUES (1, %s), (2, %s)", [b"x" * 128, secret])
        con.execute("DELETE FROM probe WHERE id = 2")
        assert secret in _raw_pages(con)
        con.execute("VACUUM probe")
        assert secret in _raw_pages(con)
        con.execute("VACUUM FULL probe")
        assert secret not in _raw_pages(con) and b"x" * 128 in _raw_pages(con)
        con.execute("DROP TABLE probe")


def test_a_run_on_postgresql_leaves_no_encoding(pg_url: str, tmp_path: Path) -> None:
    stores, _truth = partnership_copy(tmp_path / "nodes")
    key = tmp_path / "service" / "audit.key"
    key.parent.mkdir()
    with LiveService(tmp_path / "service", db_url=pg_url, audit_key=key) as svc:
        tokens = {cc: svc.token(cc) for cc in stores}
        admin = svc.token("boss", "admin")
        with svc.http(admin) as boss:
            body = {"run_id": "pg1", "nodes": list(stores), "threshold": 0.8}
            assert boss.post("/api/admin/runs", json=body).is_success
        out = run_nodes(svc.url, stores, tokens, "pg1")
        assert all(isinstance(v, dict) for v in out.values()), out
        with svc.http(admin) as boss:
            assert boss.get("/api/admin/runs/pg1").json()["state"] == "done"
            assert boss.get("/api/admin/audit").json()["verified"]["ok"] is True
        tables = svc.tables()
    found = found_pairs(link_groups(stores))
    assert found and found == core_pairs(tmp_path / "nodes", stores, 0.8)
    assert tables["linkage_clks"] == [] and tables["linkage_results"] == []
    clks = stored_clks(stores)
    cells = [v for rows in tables.values() for row in rows for v in row]
    assert not {bytes(v) for v in cells if isinstance(v, bytes | memoryview)} & set(clks)
    text = "\n".join(str(v) for v in cells)
    assert not [c for c in clks if base64.b64encode(c).decode() in text or c.hex() in text]
    con = _connect(pg_url)
    with con:
        con.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        raw = _raw_pages(con)
    assert raw  # the audit and run tables at least
    assert not [c for c in clks if c in raw], "an encoding's bytes remain in a page"
