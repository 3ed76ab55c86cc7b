"""The hub's read path (benchmarks/load/bench_reads.py): one indexed token read per request, no
cache, so a revocation holds at once, in this hub and in another process on the same database;
a pooled PostgreSQL connection the server dropped while idle is replaced, not failed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from ccdp.federation.hub import db as hub_db
from ccdp.federation.hub.auth import hash_token, new_token
from ccdp.federation.hub.models import UserRow
from tests.federation.netutil import LiveHub
from tests.federation.pg import ADMIN_URL, temporary_database
from tests.federation.standin import StandinExecutor


@contextmanager
def two_hubs(url: str) -> Iterator[tuple[LiveHub, LiveHub]]:
    """Two hubs (two apps, two engines, two pools) serving one database: as two workers do."""
    with LiveHub(url, StandinExecutor()) as one, LiveHub(url, StandinExecutor()) as other:
        yield one, other


def status(hub: LiveHub, token: str, path: str = "/api/me") -> int:
    with hub.client(token) as c:
        return c.get(path).status_code


def test_a_revoked_token_is_refused_at_once_by_every_hub_on_the_database(hub_url: str) -> None:
    """On each backend (SQLite, PostgreSQL)."""
    with two_hubs(hub_url) as (one, other):
        ana = one.hub.add_user("ana", "researcher")
        node = one.hub.add_node("A", "DE")
        for hub in (one, other):  # both hubs have read (and pooled a connection for) the tokens
            assert status(hub, ana) == 200 and status(hub, ana, "/api/studies") == 200
            assert status(hub, node, "/api/node/me") == 200
        one.hub.revoke("user", "ana")
        other.hub.revoke("node", "A")
        for hub in (one, other):  # the very next request, in either process, is refused
            assert status(hub, ana) == 401 and status(hub, ana, "/api/studies") == 401
            assert status(hub, node) == 401 and status(hub, node, "/api/node/me") == 401


def test_what_a_token_may_do_is_the_table_it_is_in_not_its_prefix(tmp_path):
    """The prefix only orders the look-up: a node-looking token stored as a user's is a user."""
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as live:
        live.hub.add_user("ana", "researcher")
        odd = new_token("node")
        with live.hub.sessions.begin() as s:
            s.execute(update(UserRow).values(token_hash=hash_token(odd)))
        with live.client(odd) as c:
            assert c.get("/api/me").json() == {"kind": "user", "name": "ana", "role": "researcher"}
            assert c.get("/api/node/me").status_code == 403
        assert status(live, odd.replace("ccdp-node-", "ccdp-user-")) == 401


def test_a_node_token_still_moves_the_nodes_last_seen(tmp_path):
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as live:
        token = live.hub.add_node("A", "DE")
        assert live.hub.nodes()[0]["last_seen"] is None
        assert status(live, token, "/api/node/me") == 200
        assert live.hub.nodes()[0]["last_seen"] is not None


@pytest.mark.postgres
def test_an_idle_connection_the_server_dropped_is_replaced_not_failed(monkeypatch):
    """No ping per checkout (a round trip per query): a connection idle past IDLE_PING is
    pinged, and one the server terminated is replaced before the request uses it."""
    monkeypatch.setattr(hub_db, "IDLE_PING", 0.0)
    with temporary_database() as url, LiveHub(url, StandinExecutor()) as live:
        ana = live.hub.add_user("ana", "researcher")
        assert status(live, ana) == 200 and status(live, ana, "/api/studies") == 200
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(ADMIN_URL) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        for _ in range(3):  # every pooled connection is dead: each is pinged and replaced
            assert status(live, ana) == 200 and status(live, ana, "/api/studies") == 200


@pytest.mark.postgres
def test_after_an_outage_a_recently_pooled_connection_is_pinged_not_failed(monkeypatch):
    """A connection used a moment before the database went away is not pinged (it is not
    idle), so it failed its next request with a 503 even once the server was back. Once the
    hub has answered a 503, every connection pooled before it is pinged and replaced first."""
    monkeypatch.setattr(hub_db, "_last_outage", [float("-inf")])
    with temporary_database() as url:
        engine = hub_db.make_engine(url, (1, 0))
        name = url.rsplit("/", 1)[1]

        def break_the_pooled_connection() -> None:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
            with psycopg.connect(ADMIN_URL) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

        try:
            break_the_pooled_connection()
            with pytest.raises(OperationalError), engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")  # not idle, not pinged: it fails once
            break_the_pooled_connection()
            hub_db.saw_database_away()
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        finally:
            engine.dispose()


def test_pages_still_get_their_security_headers_and_the_api_does_not(tmp_path):
    """The page headers moved from `@app.middleware` (a task per request) to plain ASGI."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with LiveHub(url, StandinExecutor()) as live, live.client() as c:
        page, api = c.get("/"), c.get("/api/health")
    assert page.status_code == 200 and api.status_code == 200
    assert "default-src" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "content-security-policy" not in api.headers
