"""The node's audit head anchored at the hub, over real HTTP on loopback: answers and heartbeats
carry it, the hub never lowers it and alerts when it goes back, and `ccdp node audit --verify
--hub` finds a log cut, deleted, re-keyed after an edit, or rolled back since the hub heard of
it."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccdp.federation.node.agent import NodeAgent
from ccdp.federation.node.audit import AuditLog, record_mac
from ccdp.federation.node.local import LocalNode
from ccdp.store.config import audit_key
from ccdp.wire.protocol import Answer, AuditHead, Task
from tests.federation.netutil import LiveHub, wait_until
from tests.federation.standin import StandinExecutor
from tests.storekit import build_store, random_registry

H1, H2 = "a" * 64, "b" * 64


def _hub(url: str) -> Iterator[LiveHub]:
    with LiveHub(url, StandinExecutor()) as hub:
        hub.tokens = {
            "A": hub.hub.add_node("A", "DE"),
            "ana": hub.hub.add_user("ana", "researcher"),
            "root": hub.hub.add_user("root", "admin"),
        }
        yield hub


@pytest.fixture
def live(tmp_path) -> Iterator[LiveHub]:
    yield from _hub(f"sqlite:///{tmp_path / 'hub.db'}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(request, tmp_path) -> Iterator[LiveHub]:
    if request.param == "sqlite":
        yield from _hub(f"sqlite:///{tmp_path / 'hub.db'}")
        return
    from tests.federation.pg import temporary_database

    with temporary_database() as url:
        yield from _hub(url)


@pytest.fixture
def node(tmp_path) -> LocalNode:
    store = build_store(tmp_path / "a.duckdb", random_registry(3, 60, "DE", "a"))
    return LocalNode(store, name="A")


def ask(node: LocalNode, n: int = 1) -> list[Answer]:
    """`n` count queries answered (and logged) by the node."""
    return [
        node.answer(
            Task(
                task_id=uuid.uuid4().hex,
                study_id=uuid.uuid4().hex,
                round=0,
                analysis="count",
                params={"by": ["sex"]},
            )
        )
        for _ in range(n)
    ]


def agent(live: LiveHub, node: LocalNode, **kw: float) -> NodeAgent:
    return NodeAgent(
        live.url,
        live.tokens["A"],
        node.answer,
        audit_head=AuditLog.for_store(node.store).head,
        **kw,
    )


def hub_head(live: LiveHub) -> dict:
    with live.client(live.tokens["A"]) as c:
        r = c.get("/api/node/audit-head")
        assert r.status_code == 200, r.text
        return r.json()


def beat(live: LiveHub, body: dict | None) -> int:
    with live.client(live.tokens["A"]) as c:
        return c.post("/api/node/heartbeat", json=body).status_code


def test_answers_and_heartbeats_move_the_hubs_head(live, node) -> None:
    assert hub_head(live) == {"head": None, "received_at": None, "alert": None}
    a = agent(live, node, wait=1, heartbeat=0.2)
    stop = threading.Event()
    t = threading.Thread(target=a.run, args=(stop,), daemon=True)
    t.start()
    try:
        with live.client(live.tokens["ana"]) as c:  # a study the node answers (it fails it:
            spec = {"rounds": 1, "timeout": 30, "nodes": ["A"]}  # no `rounds` analysis here)
            assert c.post("/api/studies", json={"spec": spec}).status_code == 201
        wait_until(lambda: (hub_head(live)["head"] or {}).get("seq") == 1)
        answers = ask(node, 3)  # answered in-process: the hub hears of them by heartbeat
        assert [x.audit_head.seq for x in answers] == [2, 3, 4]
        last = answers[-1].audit_head
        wait_until(lambda: hub_head(live)["head"] == last.model_dump())
    finally:
        stop.set()
        t.join(10)
        a.close()
    assert hub_head(live)["alert"] is None
    row = next(n for n in live.hub.nodes() if n["name"] == "A")
    assert row["audit_head"] == last.model_dump() and row["audit_received_at"]


def test_hub_keeps_the_highest_head_and_alerts_when_it_goes_back(any_db) -> None:
    live = any_db
    assert beat(live, None) == 200  # an empty body is still a heartbeat
    assert beat(live, {}) == 200
    assert beat(live, {"audit_head": {"seq": 120, "hash": H1}}) == 200
    assert beat(live, {"audit_head": {"seq": 120, "hash": H1}}) == 200  # the same again: fine
    assert hub_head(live)["alert"] is None
    assert beat(live, {"audit_head": {"seq": 80, "hash": H2}}) == 200
    held = hub_head(live)
    assert held["head"] == {"seq": 120, "hash": H1}  # never lowered
    assert held["alert"].startswith("head went back from 120 to 80 at ")
    assert beat(live, {"audit_head": {"seq": 121, "hash": H2}}) == 200  # moves on, alert stays
    held = hub_head(live)
    assert held["head"] == {"seq": 121, "hash": H2} and "120 to 80" in held["alert"]
    with live.client(live.tokens["root"]) as c:
        log = c.get("/api/admin/audit").json()
    alerts = [e for e in log if e["action"] == "audit-head-alert"]
    assert len(alerts) == 1 and alerts[0]["actor"] == "node:A"
    assert alerts[0]["detail"]["held"]["seq"] == 120 and alerts[0]["detail"]["sent"]["seq"] == 80


def test_the_same_seq_with_another_hash_is_an_alert(live) -> None:
    assert beat(live, {"audit_head": {"seq": 7, "hash": H1}}) == 200
    assert beat(live, {"audit_head": {"seq": 7, "hash": H2}}) == 200
    held = hub_head(live)
    assert held["head"] == {"seq": 7, "hash": H1}
    assert held["alert"].startswith(f"head 7 changed hash from {H1[:12]} to {H2[:12]}")


@pytest.mark.parametrize(
    "head",
    [
        {"seq": -1, "hash": H1},
        {"seq": "3", "hash": H1},
        {"seq": 3.5, "hash": H1},
        {"seq": 3, "hash": "a" * 63},
        {"seq": 3, "hash": "A" * 64},
        {"seq": 3, "hash": "g" * 64},
        {"seq": 3},
        {"seq": 3, "hash": H1, "mac": H2},
    ],
)
def test_malformed_heads_are_refused(live, head) -> None:
    assert beat(live, {"audit_head": head}) == 422
    with live.client(live.tokens["ana"]) as c:
        spec = {"rounds": 1, "timeout": 30, "nodes": ["A"]}
        assert c.post("/api/studies", json={"spec": spec}).status_code == 201
    with live.client(live.tokens["A"]) as c:
        task = c.get("/api/node/tasks", params={"wait": 10}).json()["tasks"][0]
        body = Answer(task_id=task["task_id"], node="A", status="failed", reason="x")
        r = c.post("/api/node/answers", json={**body.model_dump(mode="json"), "audit_head": head})
        assert r.status_code == 422, r.text
    assert hub_head(live)["head"] is None


def test_a_stale_head_in_a_late_posted_answer_is_not_an_alert(live) -> None:
    """Answers wait in an outbox or for the operator's release: their head may be older."""
    assert beat(live, {"audit_head": {"seq": 9, "hash": H1}}) == 200
    with live.client(live.tokens["ana"]) as c:
        spec = {"rounds": 1, "timeout": 30, "nodes": ["A"]}
        assert c.post("/api/studies", json={"spec": spec}).status_code == 201
    with live.client(live.tokens["A"]) as c:
        task = c.get("/api/node/tasks", params={"wait": 10}).json()["tasks"][0]
        body = Answer(task_id=task["task_id"], node="A", status="failed", reason="x")
        body = body.model_copy(update={"audit_head": AuditHead(seq=4, hash=H2)})
        assert c.post("/api/node/answers", json=body.model_dump(mode="json")).status_code == 200
    assert hub_head(live) | {"received_at": None} == {
        "head": {"seq": 9, "hash": H1},
        "received_at": None,
        "alert": None,
    }


def _verify(ccdp, live: LiveHub, store: Path):  # type: ignore[no-untyped-def]
    return ccdp(
        "node",
        "audit",
        "--store",
        store,
        "--verify",
        "--hub",
        live.url,
        "--token",
        live.tokens["A"],
        check=False,
    )


def test_verify_against_the_hub_finds_edits_cuts_deletions_and_rollbacks(
    ccdp, live, node, tmp_path
) -> None:
    store = node.store
    log = AuditLog.for_store(store)
    a = agent(live, node, wait=1)
    ask(node, 2)
    saved = tmp_path / "saved"
    saved.mkdir()
    for p in (log.path, log.head_path):  # an operator's copy at seq 2
        shutil.copy2(p, saved / p.name)
    ask(node, 2)
    a.heartbeat()
    head = log.verify()
    assert hub_head(live)["head"] == head.model_dump() and head.seq == 4

    ok = _verify(ccdp, live, store)
    assert ok.returncode == 0, ok.stderr
    assert f"head 4 {head.hash}" in ok.stdout and "matches the hub" in ok.stdout
    nodes = ccdp("hub", "nodes", "--db", live.db_url).stdout
    assert f"4 {head.hash[:12]}" in nodes

    original = log.path.read_bytes(), log.head_path.read_bytes()

    def restore() -> None:
        log.path.write_bytes(original[0])
        log.head_path.write_bytes(original[1])

    # an edit, with the chain and head recomputed by someone holding the key
    key = audit_key(store)
    records = log.records()
    records[1]["status"] = "refused"
    prev = records[0]["hash"]
    for rec in records[1:]:
        rec["prev"] = prev
        rec["hash"] = prev = record_mac(key, rec)
    log.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    AuditLog(log.path, key)._write_head(records[-1]["seq"], records[-1]["hash"])
    assert ccdp("node", "audit", "--store", store, "--verify").returncode == 0  # passes locally
    bad = _verify(ccdp, live, store)
    assert bad.returncode != 0 and "record 4 differs from the head the hub holds" in bad.stderr
    restore()

    # cut short: fails locally already
    log.path.write_text("".join(log.path.read_text().splitlines(keepends=True)[:3]))
    bad = _verify(ccdp, live, store)
    assert bad.returncode != 0 and "cut short" in bad.stderr
    restore()

    # log and head deleted: locally an empty log, but the hub heard of four records
    log.path.unlink()
    log.head_path.unlink()
    assert "0 record(s)" in ccdp("node", "audit", "--store", store, "--verify").stdout
    bad = _verify(ccdp, live, store)
    assert bad.returncode != 0 and "hub holds head 4 but the log has 0" in bad.stderr
    restore()

    # the operator's older copy of log and head put back
    for p in (log.path, log.head_path):
        shutil.copy2(saved / p.name, p)
    assert log.verify().seq == 2
    bad = _verify(ccdp, live, store)
    assert bad.returncode != 0 and "hub holds head 4 but the log has 2" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    # the node's next heartbeat sends the rolled-back head: the hub keeps 4 and raises an alert
    a.heartbeat()
    held = hub_head(live)
    assert held["head"]["seq"] == 4 and "head went back from 4 to 2" in held["alert"]
    restore()
    bad = _verify(ccdp, live, store)  # even with the log put right, the alert stands
    assert bad.returncode != 0 and "audit alert for this node: head went back" in bad.stderr
    nodes = ccdp("hub", "nodes", "--db", live.db_url).stdout
    assert f"4 {head.hash[:12]}" in nodes and "head went back from 4 to 2" in nodes
    listed = json.loads(ccdp("hub", "nodes", "--db", live.db_url, "--json").stdout)
    assert listed[0]["audit_head"] == head.model_dump()
    assert listed[0]["audit_alert"].startswith("head went back from 4 to 2")
    a.close()


def test_a_node_the_hub_never_heard_of_verifies_locally_and_says_so(ccdp, live, node) -> None:
    ask(node, 1)
    ok = _verify(ccdp, live, node.store)
    assert ok.returncode == 0, ok.stderr
    assert "the hub holds no head for this node yet" in ok.stdout
    wrong = ccdp(
        "node",
        "audit",
        "--store",
        node.store,
        "--verify",
        "--hub",
        live.url,
        "--token",
        "x",
        check=False,
    )
    assert wrong.returncode != 0 and "401" in wrong.stderr
