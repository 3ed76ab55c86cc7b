"""The token check on the event loop (tokenbook.py): the same holder as the engine's read on
every backend, nothing cached, a bounded number of PostgreSQL connections, and a database that
cannot be reached answered 503 with Retry-After, never 500."""

from __future__ import annotations

import asyncio
import socket

import psycopg
import pytest
from sqlalchemy import update

from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.auth import hash_token, new_token
from ccdp.federation.hub.db import open_database
from ccdp.federation.hub.models import UserRow
from ccdp.federation.hub.tokenbook import (
    CONNECTIONS,
    PostgresBook,
    SqliteBook,
    ThreadBook,
    TokenStoreAway,
)
from tests.federation.cancel import cancel_at_every_point
from tests.federation.netutil import LiveHub
from tests.federation.pg import temporary_database
from tests.federation.standin import StandinExecutor


def tokens_of_every_kind(hub: Hub) -> list[str]:
    """A live user of each role, a live node, a revoked user and node, an unknown token of each
    prefix, and a node-looking token stored as a user's (the table decides, not the prefix)."""
    tokens = [hub.add_user(f"u-{role}", role) for role in ("researcher", "board", "admin")]
    tokens += [hub.add_node("A", "DE"), hub.add_user("gone", "researcher"), hub.add_node("B", "FR")]
    hub.revoke("user", "gone")
    hub.revoke("node", "B")
    odd = new_token("node")
    with hub.sessions.begin() as s:
        board = update(UserRow).where(UserRow.name == "u-board")
        s.execute(board.values(token_hash=hash_token(odd)))
    return [*tokens, odd, new_token("user"), new_token("node"), "not-a-token"]


def test_the_loop_check_finds_what_the_engine_finds(hub_url: str) -> None:
    hub = Hub(open_database(hub_url))
    assert isinstance(hub.tokens, SqliteBook | PostgresBook)  # the fast path, not the thread
    tokens = tokens_of_every_kind(hub)
    expected = [hub.authenticate(t) for t in tokens]
    assert [w is not None for w in expected] == [1, 0, 1, 1, 0, 0, 1, 0, 0, 0]

    async def checks() -> list[object]:
        return [await hub.check_token(t) for t in tokens]

    assert asyncio.run(checks()) == expected
    assert asyncio.run(checks()) == expected  # a second loop: connections opened afresh
    hub.tokens = ThreadBook(hub._reads)  # what other databases are read by
    assert asyncio.run(checks()) == expected
    hub.revoke("user", "u-researcher")
    assert asyncio.run(hub.check_token(tokens[0])) is None  # nothing cached


def test_a_node_check_on_the_loop_still_moves_its_last_seen(hub_url: str) -> None:
    hub = Hub(open_database(hub_url))
    token = hub.add_node("A", "DE")
    assert hub.nodes()[0]["last_seen"] is None
    who = asyncio.run(hub.check_token(token))
    assert who is not None and who.kind == "node" and who.name == "A"
    assert hub.nodes()[0]["last_seen"] is not None


@pytest.mark.postgres
def test_fifty_checks_at_once_open_no_more_than_the_books_connections() -> None:
    with temporary_database() as url:
        hub = Hub(open_database(url))
        ana = hub.add_user("ana", "researcher")
        conninfo = url.replace("+psycopg", "") + "?application_name=ccdp_tokenbook_test"
        book = PostgresBook(conninfo)

        async def at_once() -> list[object]:
            found = await asyncio.gather(*(book.holder(ana) for _ in range(50)))
            with psycopg.connect(url.replace("+psycopg", "")) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    ("ccdp_tokenbook_test",),
                ).fetchone()
            await book.close()
            assert row is not None and 1 <= row[0] <= CONNECTIONS
            return [h.name if h else None for h in found]

        assert asyncio.run(at_once()) == ["ana"] * 50


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_token_database_is_a_503_with_retry_after(tmp_path) -> None:
    book = PostgresBook(f"postgresql://postgres@127.0.0.1:{closed_port()}/none")
    with pytest.raises(TokenStoreAway, match="cannot be reached"):
        asyncio.run(book.holder(new_token("user")))
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as live:
        ana = live.hub.add_user("ana", "researcher")
        live.hub.tokens = book
        with live.client(ana) as c:
            for path in ("/api/me", "/api/studies", "/api/node/tasks"):
                r = c.get(path)
                assert r.status_code == 503, (path, r.text)
                assert r.headers["retry-after"] == "2"
                assert "unavailable" in r.json()["detail"]


@pytest.mark.postgres
def test_requests_cancelled_while_waiting_or_reading_leave_no_connection_taken() -> None:
    """A client gone mid-check (its task cancelled) gives its place back: with one connection,
    checks cancelled at every point still leave the next checks served."""
    with temporary_database() as url:
        hub = Hub(open_database(url))
        ana = hub.add_user("ana", "researcher")
        book = PostgresBook(url.replace("+psycopg", ""), connections=1)

        async def cancel_some() -> list[object]:
            await cancel_at_every_point(lambda: book.holder(ana), (0, 0.0005, 0.001, 0.002, 0.005))
            found = await asyncio.wait_for(
                asyncio.gather(*(book.holder(ana) for _ in range(10))), timeout=20
            )
            assert book._pool.opened <= 1
            await book.close()
            return [h.name if h else None for h in found]

        assert asyncio.run(cancel_some()) == ["ana"] * 10
