"""The study and node lists read only what they show (issue 27): filtered and ordered in SQL, the
catalogue headline out of JSON paths. Their responses must stay byte-for-byte what the previous
queries (kept here as the reference: whole rows, filtered in Python) gave, on SQLite and
PostgreSQL, for every kind of reader."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from ccdp.federation.hub import loopreads
from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.auth import hash_token, new_token
from ccdp.federation.hub.context import Principal
from ccdp.federation.hub.db import LIST_CONNECTIONS, open_database
from ccdp.federation.hub.loopreads import SqliteReads
from ccdp.federation.hub.models import CatalogueRow, NodeRow, StudyRow, UserRow
from ccdp.federation.hub.service import STUDY_LIST
from ccdp.wire.protocol import utcnow
from tests.federation.cancel import cancel_at_every_point
from tests.federation.netutil import LiveHub
from tests.federation.pg import temporary_database
from tests.federation.standin import StandinExecutor

CATALOGUES: dict[str, dict[str, Any] | None] = {
    "A": {"node": "A", "generated_at": "2026-01-02T03:04:05+00:00",
          "last_ingest": "2026-01-01T00:00:00+00:00", "patients": {"count": 1234, "x": [1]},
          "tumours": {"count": 1300}, "patients_by": {"sex": [{"level": "F", "count": 600}]}},
    "B": {"node": "B", "generated_at": "2026-02-02T00:00:00+00:00", "last_ingest": None,
          "patients": {"count": None, "suppressed": True}},
    "Cé": {"node": "Cé", "generated_at": "2026-03-03T00:00:00.123456+00:00"},
    "D": None,  # registered, never published
}  # fmt: skip


def reference_studies(live: LiveHub, viewer: Principal) -> list[dict[str, Any]]:
    """The list as it was computed before: every whole row, the viewer's kept in Python."""
    with live.hub.sessions() as s:
        rows = s.scalars(select(StudyRow).order_by(StudyRow.created_at))
        return [
            {
                "id": r.id,
                "title": r.title,
                "analysis": r.analysis,
                "status": r.status,
                "project": r.project_id,
                "created_at": r.created_at.isoformat(),
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            }
            for r in rows
            if viewer.role == "admin" or (viewer.kind == "user" and r.owner_id == viewer.id)
        ]


def reference_headline(row: CatalogueRow | None) -> dict[str, Any] | None:
    """The headline as it was computed before: out of the whole stored body."""
    if row is None:
        return None
    body = row.catalogue
    return {
        "patients": (body.get("patients") or {}).get("count"),
        "last_ingest": body.get("last_ingest"),
        "generated_at": body.get("generated_at"),
        "received_at": row.received_at.isoformat(),
    }


def reference_nodes(live: LiveHub) -> list[dict[str, Any]]:
    """The node list as it was built before: ORM rows of every node, whole catalogues."""
    hub = live.hub
    with hub.sessions() as s:
        published = {c.node_id: c for c in s.scalars(select(CatalogueRow))}
        return [
            {
                "name": n.name,
                "country": n.country,
                "last_seen": n.last_seen.isoformat() if n.last_seen else None,
                "revoked": n.revoked_at is not None,
                "signing_key": n.public_key is not None,
                "audit_head": hub.audit_head(n.id).model_dump(mode="json")["head"],
                "audit_received_at": (
                    n.audit_received_at.isoformat() if n.audit_received_at else None
                ),
                "audit_alert": n.audit_alert,
                "catalogue": reference_headline(published.get(n.id)),
            }
            for n in s.scalars(select(NodeRow).order_by(NodeRow.name))
        ]


def as_sent(content: Any) -> bytes:
    """What FastAPI's JSONResponse sends for `content`."""
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def populate(live: LiveHub) -> dict[str, str]:
    """Users (researchers with and without studies, an admin, a board member), nodes with and
    without catalogues (one revoked), and studies of several owners in every state."""
    hub = live.hub
    tokens = {n: hub.add_user(n, r) for n, r in
              [("ana", "researcher"), ("bo", "researcher"), ("cy", "researcher"),
               ("root", "admin"), ("eve", "board")]}  # fmt: skip
    for name in CATALOGUES:
        hub.add_node(name, "DE")
    hub.revoke("node", "D")
    start = utcnow() - timedelta(days=1)
    with hub.sessions.begin() as s:
        users = {u.name: u.id for u in s.scalars(select(UserRow))}
        nodes = {n.name: n.id for n in s.scalars(select(NodeRow))}
        first = s.get(NodeRow, min(nodes.values()))  # a node with every field of the list set
        assert first is not None
        first.last_seen, first.audit_received_at = start, start + timedelta(seconds=1)
        first.audit_seq, first.audit_hash, first.audit_alert = 7, "ab" * 32, "a gap"
        first.public_key = "-----BEGIN PUBLIC KEY-----"
        for name, body in CATALOGUES.items():
            if body is not None:
                s.add(CatalogueRow(node_id=nodes[name], catalogue=body, received_at=start))
        owners = ["ana", "bo", "ana", None, "root", "bo", "ana"]
        statuses = ["done", "failed", "running", "done", "queued", "done", "done"]
        for i, (owner, status) in enumerate(zip(owners, statuses, strict=True)):
            done = status in ("done", "failed")
            s.add(
                StudyRow(
                    id=f"s{i:02d}-{'x' * 20}",
                    title=f'étude {i} "quoted" ✓',
                    analysis="count" if i % 2 else "km",
                    spec={"analysis": "count", "big": list(range(50))},
                    owner_id=users[owner] if owner else None,
                    nodes=["A", "B"],
                    min_nodes=1,
                    timeout=30.0,
                    status=status,
                    result={"rows": [[i, 1.5]]} if done else None,
                    error="boom" if status == "failed" else None,
                    created_at=start + timedelta(minutes=7 - i),  # inserted newest first
                    finished_at=start + timedelta(hours=1, microseconds=i) if done else None,
                    project_id="p1" if i % 3 == 0 else None,
                )
            )
    return tokens


def test_the_lists_are_byte_for_byte_unchanged(hub_url: str) -> None:
    """On each backend (SQLite, PostgreSQL) and for every kind of reader."""
    with LiveHub(hub_url, StandinExecutor()) as live:
        tokens = populate(live)
        for name, token in tokens.items():
            viewer = live.hub.authenticate(token)
            assert viewer is not None
            with live.client(token) as c:
                studies, nodes = c.get("/api/studies"), c.get("/api/nodes")
            assert studies.status_code == 200 and nodes.status_code == 200, name
            expected = reference_studies(live, viewer)
            assert studies.content == as_sent(expected), name
            assert nodes.content == as_sent(reference_nodes(live)), name
            assert live.hub.studies(viewer) == expected
        ana = live.hub.authenticate(tokens["ana"])
        assert ana is not None
        assert [s["id"][:3] for s in live.hub.studies(ana)] == ["s06", "s02", "s00"]
        assert live.hub.studies(None) == reference_studies(live, Principal("user", 0, "x", "admin"))
        assert len(live.hub.studies(None)) == 7
        assert [s["id"][:3] for s in live.hub.studies(Principal("node", 1, "A", None))] == []
        assert len(live.hub.studies(live.hub.authenticate(tokens["cy"]))) == 0
        headlines = {n["name"]: n["catalogue"] for n in live.hub.nodes()}
        assert headlines["A"]["patients"] == 1234 and headlines["D"] is None
        assert headlines["B"]["patients"] is None and headlines["B"]["last_ingest"] is None
        assert headlines["Cé"]["patients"] is None and headlines["Cé"]["last_ingest"] is None


def test_a_token_stored_by_hand_sees_only_its_studies(tmp_path):
    """A user row added outside the API (as an import would) lists by its id, not its name."""
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as live:
        populate(live)
        token = new_token("user")
        with live.hub.sessions.begin() as s:
            s.add(UserRow(name="zed", role="researcher", token_hash=hash_token(token)))
        with live.client(token) as c:
            assert c.get("/api/studies").json() == []


def test_the_lists_refuse_exactly_as_every_other_user_route(tmp_path):
    """The lists check their token in the read's own thread hop: the same 401s and 403 (status,
    body, header) as a route behind `AsUser` (/api/catalogues)."""
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as live:
        tokens = populate(live)
        node = live.hub.add_node("N", "FR")
        live.hub.revoke("user", "bo")
        for token in (None, "ccdp-user-nonsense", tokens["bo"], node):
            with live.client(token) as c:
                guarded = c.get("/api/catalogues")
                assert guarded.status_code in (401, 403)
                for path in ("/api/studies", "/api/nodes"):
                    got = c.get(path)
                    assert (got.status_code, got.content) == (guarded.status_code, guarded.content)
                    assert got.headers.get("www-authenticate") == guarded.headers.get(
                        "www-authenticate"
                    )


def test_the_lists_are_read_on_the_loop_and_never_wait_for_a_writer(hub_url, monkeypatch):
    """The lists are read on the event loop (loopreads.py), not in a worker thread: on SQLite by
    its own read-only connection, on PostgreSQL by asyncio connections. A writer holding its
    transaction open does not hold up a list, which shows the last commit, and the next list
    shows the writer's commit at once."""
    with LiveHub(hub_url, StandinExecutor()) as live:
        tokens = populate(live)
        hub = live.hub
        in_threads = []
        threaded = hub.read_listed
        monkeypatch.setattr(hub, "read_listed", lambda *a: in_threads.append(1) or threaded(*a))
        assert hub.loop_reads is not None
        with hub.sessions() as writer, live.client(tokens["root"], timeout=5) as c:
            with writer.begin():
                writer.add(
                    StudyRow(
                        id="s99-uncommitted", title="new", analysis="count", spec={},
                        owner_id=None, nodes=["A"], min_nodes=1, timeout=30.0,
                        status="queued", created_at=utcnow(),
                    )
                )  # fmt: skip
                writer.flush()  # SQLite: the database's write lock is now held
                started = time.perf_counter()
                listed = c.get("/api/studies")
                waited = time.perf_counter() - started
                assert listed.status_code == 200 and c.get("/api/nodes").status_code == 200
                assert "s99-uncommitted" not in {s["id"] for s in listed.json()}
                assert waited < 1.0
            assert "s99-uncommitted" in {s["id"] for s in c.get("/api/studies").json()}
        assert in_threads == []
        if hub_url.startswith("sqlite"):
            assert isinstance(hub.loop_reads, SqliteReads)
            with hub.loop_reads.engine.connect() as conn, pytest.raises(OperationalError):
                conn.exec_driver_sql("DELETE FROM studies")  # query_only: it cannot write
            assert len(hub.studies(None)) == 8


def test_the_lists_fall_back_to_threads_where_the_loop_cannot_read(tmp_path, monkeypatch):
    """A database only its own engine can see (in-memory SQLite) keeps the worker threads,
    which list the same."""
    assert loopreads.loop_reads_for(create_engine("sqlite://")) is None
    pg = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/x")
    assert isinstance(loopreads.loop_reads_for(pg), loopreads.PostgresReads)
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as live:
        tokens = populate(live)
        with live.client(tokens["root"]) as c:
            on_loop = c.get("/api/studies").content, c.get("/api/nodes").content
            monkeypatch.setattr(live.hub, "loop_reads", None)
            in_threads = []
            threaded = live.hub.read_listed
            monkeypatch.setattr(
                live.hub, "read_listed", lambda *a: in_threads.append(1) or threaded(*a)
            )
            assert (c.get("/api/studies").content, c.get("/api/nodes").content) == on_loop
        assert len(in_threads) == 2


@pytest.mark.postgres
def test_postgres_lists_are_read_raw_and_list_what_sqlalchemy_lists(monkeypatch):
    """On PostgreSQL the lists are sent by psycopg itself, not through SQLAlchemy's engine (no
    statement of the list reaches it), and give the same bytes as the SQLAlchemy path (the
    worker threads) on the same database, for every kind of reader."""
    with temporary_database() as url, LiveHub(url, StandinExecutor()) as live:
        assert isinstance(live.hub.loop_reads, loopreads.PostgresReads)
        tokens = populate(live)
        through_engine: list[str] = []
        engine = live.hub.sessions.kw["bind"]
        spy = lambda *a: through_engine.append(a[2])  # noqa: E731
        for token in tokens.values():
            with live.client(token) as c:
                event.listen(engine, "before_cursor_execute", spy)
                raw = c.get("/api/studies").content, c.get("/api/nodes").content
                event.remove(engine, "before_cursor_execute", spy)
                assert not [sql for sql in through_engine if "FROM studies" in sql]
                assert not [sql for sql in through_engine if "FROM nodes LEFT" in sql]
                with monkeypatch.context() as m:
                    m.setattr(live.hub, "loop_reads", None)
                    assert (c.get("/api/studies").content, c.get("/api/nodes").content) == raw
        root = live.hub.authenticate(tokens["root"])
        assert root is not None
        with live.client(tokens["root"]) as c:
            assert c.get("/api/studies").content == as_sent(reference_studies(live, root))
            assert c.get("/api/nodes").content == as_sent(reference_nodes(live))


def test_a_statement_rendered_at_each_execution_is_refused_by_the_raw_path():
    """An expanding IN is rendered again for each execution: sent as compiled once it would be
    wrong SQL, so the raw path refuses it outright."""
    pg = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/x")
    stmt = select(StudyRow.id).where(StudyRow.status.in_(["done", "failed"]))
    with pytest.raises(loopreads.UnplannedStatement, match="rendered again"):
        loopreads._Plan(stmt, pg.dialect)


SLOW = loopreads.Listing(lambda _: (text("SELECT pg_sleep(0.003), 1"), {}), list)


@pytest.mark.postgres
def test_cancelled_list_reads_leave_no_connection_taken():
    """A client gone mid-list (its task cancelled, or its request's anyio scope timed out, which
    cancels again at every await) gives its connection back: with the loop's two connections,
    reads cancelled at every point still leave the next reads served and nothing taken."""
    with temporary_database() as url:
        hub = Hub(open_database(url))
        reads = hub.loop_reads
        assert isinstance(reads, loopreads.PostgresReads)

        async def cancel_some() -> tuple[int, int, int]:
            await cancel_at_every_point(lambda: reads.read(SLOW, None))
            done = asyncio.gather(*(reads.read(SLOW, None) for _ in range(10)))
            served = await asyncio.wait_for(done, timeout=20)
            taken, opened = reads.connections.taken, reads.connections.opened
            await reads.close()
            return len(served), taken, opened

        served, taken, opened = asyncio.run(cancel_some())
        assert (served, taken) == (10, 0) and 1 <= opened <= LIST_CONNECTIONS
        hub.sessions.kw["bind"].dispose()


def test_the_node_list_with_its_catalogue_headlines_is_one_statement(hub_url):
    """The hooks' columns are read in the node list's own statement: one round trip for the
    whole list, however many nodes and hooks (on PostgreSQL each costs the hub CPU)."""
    hub = Hub(open_database(hub_url))
    try:
        populate(SimpleNamespace(hub=hub))  # type: ignore[arg-type]
        sent: list[str] = []
        engine = hub.sessions.kw["bind"]
        event.listen(engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
        with_catalogues = hub.nodes()
        assert len(sent) == 1 and "catalogues" in sent[0]
        assert [n["catalogue"] is None for n in with_catalogues] == [False, False, False, True]
    finally:
        hub.sessions.kw["bind"].dispose()


ONE = loopreads.Listing(lambda _: (select(1), {}), list)


def test_each_loop_thread_keeps_its_sqlite_connection(tmp_path):
    """Twelve threads, each running a loop (as a test client does), read at once, twice: each
    opens one connection and keeps it (SQLAlchemy's default of 5 threads closed the others')."""
    import threading

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    Hub(open_database(url))  # the schema
    reads = SqliteReads(make_url(url))
    opened: list[int] = []
    event.listen(reads.engine, "connect", lambda *_: opened.append(threading.get_ident()))
    together = threading.Barrier(12)
    failures: list[BaseException] = []

    def one_thread() -> None:
        try:
            for _ in range(2):
                asyncio.run(reads.read(ONE, None))
                together.wait(timeout=30)
        except BaseException as exc:  # reported below, from the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=one_thread) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    asyncio.run(reads.close())
    assert failures == []
    assert len(opened) == len(set(opened)) == 12


def test_the_loop_connections_cannot_write(hub_url):
    """The lists' own connections are read-only on both databases (SQLite `query_only`,
    PostgreSQL `default_transaction_read_only`): whatever runs on them, nothing is written."""
    hub = Hub(open_database(hub_url))
    try:
        populate(SimpleNamespace(hub=hub))  # type: ignore[arg-type]
        reads = hub.loop_reads
        assert reads is not None

        delete = loopreads.Listing(lambda _: (text("DELETE FROM studies"), {}), list)

        async def attempt() -> None:
            try:
                with pytest.raises((DBAPIError, psycopg.Error), match=r"(?i)read.only|readonly"):
                    await reads.read(delete, None)
                assert len(await reads.read(STUDY_LIST, None)) == 7
            finally:
                await reads.close()

        asyncio.run(attempt())
        assert len(hub.studies(None)) == 7
    finally:
        hub.sessions.kw["bind"].dispose()


def test_the_read_only_option_keeps_the_options_the_url_gives():
    """A hub URL's own libpq `options` (a search path, a statement timeout) still apply on the
    lists' connections, with read-only added."""
    with temporary_database() as url:
        given = make_url(url).update_query_dict({"options": "-c statement_timeout=4321"})
        reads = loopreads.loop_reads_for(create_engine(given))
        assert isinstance(reads, loopreads.PostgresReads)
        shown = (
            "current_setting('statement_timeout'), current_setting('default_transaction_read_only')"
        )
        settings = loopreads.Listing(lambda _: (text(f"SELECT {shown}"), {}), list)

        async def read() -> list[Any]:
            try:
                return await reads.read(settings, None)
            finally:
                await reads.close()

        assert [tuple(r) for r in asyncio.run(read())] == [("4321ms", "on")]
