"""The hub API on loopback: tokens, three doors, task isolation, duplicate and late answers."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ccdp.federation.hub.auth import hash_token
from ccdp.federation.hub.db import make_engine, migrate
from ccdp.federation.hub.models import Base
from ccdp.federation.node.agent import NodeAgent
from ccdp.wire.protocol import Answer, Task
from tests.federation.clock import FakeClock
from tests.federation.netutil import LiveHub, wait_until
from tests.federation.standin import StandinExecutor, StandinNode


@pytest.fixture
def live(tmp_path):
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor(), clock=FakeClock()) as hub:
        hub.tokens = {
            "A": hub.hub.add_node("A", "DE"),
            "B": hub.hub.add_node("B", "FR"),
            "ana": hub.hub.add_user("ana", "researcher"),
            "root": hub.hub.add_user("root", "admin"),
        }
        yield hub


def submit(hub: LiveHub, **spec) -> str:
    with hub.client(hub.tokens["ana"]) as c:
        r = c.post("/api/studies", json={"spec": spec})
        assert r.status_code == 201, r.text
        return r.json()["id"]


def wait_open_task(hub: LiveHub, node: str) -> dict:
    with hub.client(hub.tokens[node]) as c:
        tasks = c.get("/api/node/tasks", params={"wait": 25}).json()["tasks"]
    assert len(tasks) == 1
    return tasks[0]


def time_runs_out(hub: LiveHub, seconds: float) -> None:
    """The hub's clock (a `FakeClock`) moves `seconds` on, and the runner is woken to look at
    it: a test submits with a long timeout and lets it pass when it chooses, never racing a
    short one on a loaded machine (issue 26)."""
    assert isinstance(hub.clock, FakeClock)
    hub.clock.advance(seconds)
    hub.hub.waker.wake()


def answer(task: dict, node: str, value: float) -> dict:
    summary = {"s": {"kind": "aggregate", "n": 3, "n_params": 1, "values": {"sum": value}}}
    return Answer(
        task_id=task["task_id"], node=node, status="answered", summary=summary
    ).model_dump(mode="json")


def test_migrations_create_exactly_the_models(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_a_nodes_look_for_tasks_reads_an_index_not_the_table(tmp_path):
    """Each long-poll looks up the node's open tasks: by index, not a scan of every task."""
    from sqlalchemy import text

    from ccdp.federation.hub.service import _open_tasks

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    stmt = _open_tasks(1, ("pending", "delivered"))
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        plan = [row[-1] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    tasks = [step for step in plan if " tasks " in f" {step} "]
    assert tasks and all("USING INDEX ix_tasks_node_status" in step for step in tasks), plan


def test_tokens_are_stored_only_hashed(live, tmp_path):
    rows = sqlite3.connect(tmp_path / "hub.db").execute("select token_hash from nodes").fetchall()
    stored = {r[0] for r in rows}
    assert live.tokens["A"] not in stored
    assert hash_token(live.tokens["A"]) in stored
    assert live.tokens["A"].startswith("ccdp-node-") and len(live.tokens["A"]) > 40


def test_openapi_describes_the_routes(live):
    with live.client() as c:
        spec = c.get("/openapi.json").json()
    assert {"/api/node/tasks", "/api/node/answers", "/api/studies"} <= set(spec["paths"])


def test_api_docs_load_without_the_internet(live):
    """/docs names no outside address: Swagger UI's files come from the hub itself."""
    import re

    with live.client() as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "swagger" in page.text.lower()
        refs = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
        assert refs and not [r for r in refs if "://" in r or r.startswith("//")], refs
        for ref in refs:
            assert c.get(ref).status_code == 200, ref


def test_node_token_refused_on_user_routes_and_user_token_on_node_routes(live):
    with live.client(live.tokens["A"]) as c:
        assert c.get("/api/studies").status_code == 403
        assert c.post("/api/studies", json={"spec": {}}).status_code == 403
        assert c.get("/api/nodes").status_code == 403
        assert c.post("/api/admin/users", json={"name": "x"}).status_code == 403
    with live.client(live.tokens["ana"]) as c:
        assert c.get("/api/node/tasks").status_code == 403
        assert c.post("/api/node/heartbeat").status_code == 403
        assert c.post("/api/admin/users", json={"name": "x"}).status_code == 403  # not admin
    with live.client("ccdp-node-forged") as c:
        assert c.get("/api/node/tasks").status_code == 401
    with live.client() as c:
        assert c.get("/api/node/tasks").status_code == 401


def test_unknown_fields_are_refused(live):
    with live.client(live.tokens["ana"]) as c:
        r = c.post("/api/studies", json={"spec": {"rounds": 1}, "priority": "high"})
        assert r.status_code == 422
        r = c.post("/api/studies", json={"spec": {"rounds": 1, "colour": "red"}})
        assert r.status_code == 422 and "colour" in r.text
    with live.client(live.tokens["root"]) as c:
        r = c.post("/api/admin/nodes", json={"name": "C", "country": "IT", "x": 1})
        assert r.status_code == 422


def test_node_sees_only_its_own_tasks_and_never_results(live):
    sid = submit(live, rounds=1, timeout=30)
    task_a = wait_open_task(live, "A")
    task_b = wait_open_task(live, "B")
    assert task_a["task_id"] != task_b["task_id"]
    with live.client(live.tokens["A"]) as c:
        assert c.get(f"/api/node/tasks/{task_b['task_id']}").status_code == 404
        assert c.get(f"/api/node/tasks/{task_a['task_id']}").status_code == 200
        # A cannot answer for B, nor pretend to be B
        assert c.post("/api/node/answers", json=answer(task_b, "A", 1.0)).status_code == 404
        assert c.post("/api/node/answers", json=answer(task_a, "B", 1.0)).status_code == 409
        assert c.get(f"/api/studies/{sid}").status_code == 403
    with live.client(live.tokens["B"]) as c:
        assert c.post("/api/node/answers", json=answer(task_b, "B", 2.0)).json()["status"] == (
            "accepted"
        )
    with live.client(live.tokens["A"]) as c:
        assert c.post("/api/node/answers", json=answer(task_a, "A", 5.0)).status_code == 200
    with live.client(live.tokens["ana"]) as c:
        study = c.get(f"/api/studies/{sid}", params={"wait": 25}).json()
    assert study["status"] == "done"
    assert study["result"]["result"]["total"] == 7.0
    # another researcher does not see ana's study
    token = live.hub.add_user("bob", "researcher")
    with live.client(token) as c:
        assert c.get(f"/api/studies/{sid}").status_code == 404


def test_study_list_gives_project_and_times_and_only_ones_own(live):
    """GET /api/studies: what a list of studies shows (the dashboard's Studies page); a
    study's record carries the spec as submitted."""
    sid = submit(live, title="listed", rounds=1, timeout=30)
    with live.client(live.tokens["ana"]) as c:
        rows = c.get("/api/studies").json()
    row = next(r for r in rows if r["id"] == sid)
    assert row["title"] == "listed" and row["status"] in ("queued", "running")
    assert {"analysis", "project", "created_at", "finished_at"} <= set(row)
    assert row["project"] is None and row["finished_at"] is None  # an open hub, not finished
    assert "result" not in row  # the result only from GET /api/studies/{id}
    with live.client(live.tokens["ana"]) as c:
        record = c.get(f"/api/studies/{sid}").json()
    assert {"title": "listed", "rounds": 1, "timeout": 30}.items() <= record["spec"].items()
    token = live.hub.add_user("carl", "researcher")
    with live.client(token) as c:
        assert c.get("/api/studies").json() == []


def test_result_posted_twice_counts_once(live):
    sid = submit(live, rounds=1, timeout=30)
    task_a, task_b = wait_open_task(live, "A"), wait_open_task(live, "B")
    with live.client(live.tokens["A"]) as c:
        first = c.post("/api/node/answers", json=answer(task_a, "A", 5.0))
        second = c.post("/api/node/answers", json=answer(task_a, "A", 5.0))
        different = c.post("/api/node/answers", json=answer(task_a, "A", 6.0))
    assert first.json()["status"] == "accepted"
    assert second.status_code == 200 and second.json()["status"] == "duplicate"
    assert different.status_code == 409
    with live.client(live.tokens["B"]) as c:
        c.post("/api/node/answers", json=answer(task_b, "B", 2.0))
    with live.client(live.tokens["ana"]) as c:
        study = c.get(f"/api/studies/{sid}", params={"wait": 25}).json()
    assert study["result"]["result"]["total"] == 7.0


def test_concurrent_duplicate_posts_count_once(live):
    sid = submit(live, rounds=1, timeout=30)
    task_a, task_b = wait_open_task(live, "A"), wait_open_task(live, "B")
    statuses: list[str] = []

    def post() -> None:
        with live.client(live.tokens["A"]) as c:
            statuses.append(
                c.post("/api/node/answers", json=answer(task_a, "A", 5.0)).json()["status"]
            )

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == ["accepted"] + ["duplicate"] * 5
    with live.client(live.tokens["B"]) as c:
        c.post("/api/node/answers", json=answer(task_b, "B", 2.0))
    with live.client(live.tokens["ana"]) as c:
        assert (
            c.get(f"/api/studies/{sid}", params={"wait": 25}).json()["result"]["result"]["total"]
            == 7.0
        )


def test_late_result_is_recorded_not_used_and_reported(live):
    """B never answers in time, so the timeout is the only way the study can end: A's answer
    lands one second before the deadline of the hub's (fake) clock and counts; the clock then
    passes the deadline, B is reported failed with the timeout reason, and B's answer is late."""
    sid = submit(live, rounds=1, timeout=3600, min_nodes=1)
    task_a, task_b = wait_open_task(live, "A"), wait_open_task(live, "B")
    time_runs_out(live, 3599)  # one second left
    with live.client(live.tokens["A"]) as c:
        assert c.post("/api/node/answers", json=answer(task_a, "A", 5.0)).json()["status"] == (
            "accepted"
        )
    with live.client(live.tokens["ana"]) as c:
        assert c.get(f"/api/studies/{sid}").json()["status"] != "done"  # still waiting for B
        time_runs_out(live, 2)  # past the deadline
        study = c.get(f"/api/studies/{sid}", params={"wait": 25}).json()
    assert study["status"] == "done", study
    assert study["result"]["result"]["total"] == 5.0
    assert study["result"]["nodes"]["A"]["status"] == "answered"
    assert study["result"]["nodes"]["B"]["status"] == "failed"
    assert "no answer within the study timeout (3600 s)" in study["result"]["nodes"]["B"]["reason"]
    assert study["result"]["min_nodes_met"] is True
    with live.client(live.tokens["B"]) as c:
        late = c.post("/api/node/answers", json=answer(task_b, "B", 2.0))
        again = c.post("/api/node/answers", json=answer(task_b, "B", 2.0))
    assert late.json()["status"] == "late" and again.json()["status"] == "duplicate"
    with live.client(live.tokens["ana"]) as c:
        study = c.get(f"/api/studies/{sid}").json()
    assert study["result"]["result"]["total"] == 5.0
    assert [(x["node"], x["used"]) for x in study["late_answers"]] == [("B", False)]


def test_minimum_not_met_is_said(live):
    sid = submit(live, rounds=1, timeout=3600)
    wait_open_task(live, "A")
    with live.client(live.tokens["ana"]) as c:
        time_runs_out(live, 3601)  # no node answers: the timeout ends the study
        study = c.get(f"/api/studies/{sid}", params={"wait": 25}).json()
    assert study["status"] == "done", study
    assert study["result"]["min_nodes"] == 2 and study["result"]["min_nodes_met"] is False


def test_revoked_node_token_gets_401(live):
    with live.client(live.tokens["A"]) as c:
        assert c.get("/api/node/me").json()["name"] == "A"
        live.hub.revoke("node", "A")
        assert c.get("/api/node/me").status_code == 401
        assert c.get("/api/node/tasks").status_code == 401
    with live.client(live.tokens["root"]) as c:
        assert c.post("/api/admin/users/ana/revoke").status_code == 200
    with live.client(live.tokens["ana"]) as c:
        assert c.get("/api/studies").status_code == 401


def test_agents_answer_a_multi_round_study_reading_data_once(live):
    nodes = {"A": StandinNode([1.0, 2.0, 3.0]), "B": StandinNode([10.0, 20.0])}
    stop = threading.Event()
    agents = [
        NodeAgent(live.url, live.tokens[n], nodes[n].answer, wait=2, heartbeat=0.2) for n in nodes
    ]
    threads = [threading.Thread(target=a.run, args=(stop,), daemon=True) for a in agents]
    for t in threads:
        t.start()
    try:
        sid = submit(live, rounds=4, timeout=30)
        with live.client(live.tokens["ana"]) as c:
            study = c.get(f"/api/studies/{sid}", params={"wait": 30}).json()
            seen = c.get("/api/nodes").json()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    # rounds k=0..3 weight by 1..4: 36 * (1+2+3+4)
    assert study["result"]["result"] == {
        "analysis": "rounds",
        "total": 360.0,
        "n": 5,
        "rounds": 4,
    }, study
    assert all(n.caches[sid]["reads"] == 1 for n in nodes.values())
    assert all(n.calls == 4 for n in nodes.values())
    assert all(n["last_seen"] is not None for n in seen)


def test_heartbeat_moves_last_seen(live):
    def last_seen() -> str | None:
        return next(n for n in live.hub.nodes() if n["name"] == "A")["last_seen"]

    stop = threading.Event()
    agent = NodeAgent(live.url, live.tokens["A"], StandinNode([1.0]).answer, wait=1, heartbeat=0.2)
    t = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    t.start()
    try:
        first = wait_until(last_seen)
        # last-seen is written at most once a second of the hub's clock: move it one second
        # on, and the next heartbeat writes it (waited for, bounded)
        time_runs_out(live, 1)
        later = wait_until(lambda: (seen := last_seen()) != first and seen, timeout=30)
    finally:
        stop.set()
        t.join(10)
    assert datetime.fromisoformat(later) - datetime.fromisoformat(first) == timedelta(seconds=1)


@pytest.mark.postgres
def test_migrations_create_exactly_the_models_on_postgres():
    from tests.federation.pg import temporary_database

    with temporary_database() as url:
        engine = make_engine(url)
        migrate(engine)
        migrate(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        engine.dispose()


def test_admin_imports_a_signed_result_file_over_http(live):
    from ccdp.federation import resultfile

    sid = submit(live, rounds=1, timeout=30, nodes=["A"])
    task = Task.model_validate(wait_open_task(live, "A"))
    ans = Answer.model_validate(answer(task.model_dump(), "A", 4.0))
    signed = resultfile.sign_with_token("A", task, ans, live.tokens["A"])
    wrong = resultfile.sign_with_token("A", task, ans, live.tokens["B"])
    body = signed.model_dump(mode="json")
    with live.client(live.tokens["ana"]) as c:  # researchers may not import
        assert c.post("/api/admin/import", json=body).status_code == 403
    with live.client(live.tokens["root"]) as c:
        bad = c.post("/api/admin/import", json=wrong.model_dump(mode="json"))
        assert bad.status_code == 400 and "signature is invalid" in bad.json()["detail"]
        assert c.post("/api/admin/import", json=body).json()["status"] == "accepted"
        assert c.post("/api/admin/import", json=body).json()["status"] == "duplicate"
    with live.client(live.tokens["ana"]) as c:
        study = c.get(f"/api/studies/{sid}", params={"wait": 25}).json()
    assert study["result"]["result"]["total"] == 4.0


def test_malformed_or_non_finite_summaries_are_refused_before_storing(live):
    submit(live, rounds=1, timeout=30)
    task = wait_open_task(live, "A")
    good = answer(task, "A", 5.0)
    columns = {"group": ["all", "all"], "time": [1.0, 2.0], "d": [1, 0]}
    table = {"kind": "event_times", "group_by": [], "group_sizes": {"all": 40}}
    aggregate = {"kind": "aggregate", "n": 3, "n_params": 1}
    bad = {  # the part, and what the refusal must say
        "must be finite": {**aggregate, "values": {"sum": [1.0, float("nan")]}},
        "finite (no NaN": {**table, "columns": {**columns, "time": [1.0, float("inf")]}},
        "rows of different lengths": {**table, "columns": {**columns, "a": [[1.0, 2.0], [3.0]]}},
        "columns of different lengths": {**table, "columns": {**columns, "d": [1]}},
        "'d': values must be numbers": {**table, "columns": {**columns, "d": ["1", "0"]}},
        "needs `group` and `time`": {**table, "columns": {"d": [1]}},
        "unknown kind 'pickle'": {"kind": "pickle"},
    }
    with live.client(live.tokens["A"]) as c:
        for why, part in bad.items():
            body = json.dumps(
                {**good, "summary": {"s": part}}
            )  # NaN and Infinity as Python writes them
            r = c.post(
                "/api/node/answers", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 422 and why in r.json()["detail"], (why, r.text)
        assert c.post("/api/node/answers", json=good).json()["status"] == "accepted"


def test_an_answer_in_another_protocol_version_is_refused_with_what_to_do(live):
    submit(live, rounds=1, timeout=30)
    task = wait_open_task(live, "A")
    old = {**answer(task, "A", 5.0), "protocol_version": 1}
    with live.client(live.tokens["A"]) as c:
        r = c.post("/api/node/answers", json=old)
        assert r.status_code == 422
        assert "protocol version 1 is not spoken here" in r.text and "same ccdp release" in r.text
        assert c.post("/api/node/answers", json=answer(task, "A", 5.0)).status_code == 200
