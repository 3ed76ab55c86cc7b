"""A round's path holds no poll interval: a task reaches a waiting node agent when it is posted,
an answer reaches the study's runner when it is recorded. And the node reads its store from a
snapshot that an ingest renews and that never holds the store's lock."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ccdp.cohort.spec import CohortSpec
from ccdp.federation.client import HubClient
from ccdp.federation.hub import routes
from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.db import open_database
from ccdp.federation.hub.runner import HubTransport
from ccdp.federation.hub.studies import SpecExecutor
from ccdp.federation.node.agent import NodeAgent
from ccdp.federation.node.local import LocalNode
from ccdp.wire.protocol import ANSWER_THEN_TASKS, Answer, Task
from tests.federation.conftest import LONG, running_count_study
from tests.federation.netutil import LiveHub, wait_until
from tests.storekit import build_store, random_registry

# LONG: a poll interval no test could wait out: were it on the path, the test would fail


def test_an_answer_ends_the_round_when_recorded_not_at_the_runners_next_poll(tmp_path: Path):
    hub = Hub(open_database(f"sqlite:///{tmp_path / 'hub.db'}"), open_studies=True)
    hub.add_node("FR", "FR")
    owner = hub.authenticate(hub.add_user("ana", "researcher"))
    sid = running_count_study(hub, owner)
    transport = HubTransport(hub, sid, ["FR"], LONG, threading.Event(), poll=LONG)
    answers: dict[str, Answer] = {}
    task = Task(task_id="x", study_id="local", round=0, analysis="count")
    asking = threading.Thread(
        target=lambda: answers.update(transport.ask(task, ["FR"])), daemon=True
    )
    asking.start()
    node_id = _node_id(hub, "FR")
    sent = wait_until(lambda: hub.pending_tasks(node_id), 30)[0]
    t0 = time.monotonic()
    hub.record_answer(node_id, Answer(task_id=sent.task_id, node="FR", status="failed", reason="r"))
    asking.join(30)
    assert not asking.is_alive()
    assert time.monotonic() - t0 < 10  # a loaded 2-core machine; the poll would be an hour
    assert answers["FR"].reason == "r"


def _node_id(hub: Hub, name: str) -> int:
    from sqlalchemy import select

    from ccdp.federation.hub.models import NodeRow

    with hub.sessions() as s:
        return s.scalars(select(NodeRow.id).where(NodeRow.name == name)).one()


def test_a_waiting_agent_answers_each_round_when_it_is_posted(tmp_path: Path):
    """The agent long-polls for an hour; a three-round Cox fit and a count still finish in
    seconds, so neither a task's delivery nor the agent's chores between rounds wait for a
    poll to end."""
    store = build_store(tmp_path / "FR.duckdb", random_registry(3, 300, "FR", "FR"))
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", SpecExecutor()) as live:
        token = live.hub.add_node("FR", "FR")
        user = live.hub.add_user("ana", "researcher")
        node = LocalNode(store, name="FR")
        agent = NodeAgent(live.url, token, node.answer, wait=LONG / 60, heartbeat=LONG)
        stop = threading.Event()
        serving = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        serving.start()
        try:
            wait_until(lambda: live.hub.nodes()[0]["last_seen"], 30)
            client = HubClient(live.url, user)
            for spec in (
                {"analysis": "count", "by": ["sex"]},
                {"analysis": "cox", "outcome": "os", "covariates": ["sex"]},
            ):
                t0 = time.monotonic()
                study = client.wait(client.submit(spec), max_wait=50)
                took = time.monotonic() - t0
                assert study["status"] == "done", study
                assert study["result"]["nodes"]["FR"]["status"] == "answered"
                assert took < 30, (spec, took)  # each poll of the agent lasts 60 s
            assert study["result"]["rounds"] >= 3
        finally:
            stop.set()
            live.hub.waker.wake()
            serving.join(70)
            agent.close()


WRITE = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("INSERT INTO patient SELECT * REPLACE ('ZZ1' AS patient_id) FROM patient LIMIT 1")
con.execute(
    "INSERT INTO tumour SELECT * REPLACE ('ZZ1' AS patient_id, 'ZZT1' AS tumour_id) FROM tumour "
    "WHERE patient_id = (SELECT min(patient_id) FROM patient WHERE patient_id <> 'ZZ1') LIMIT 1"
)
con.close()
"""


def test_the_node_reads_a_snapshot_an_ingest_renews_and_never_blocks(tmp_path: Path):
    """After an answer, another process can still write the store (the snapshot holds no lock),
    and the next answer counts what it wrote."""
    store = build_store(tmp_path / "FR.duckdb", random_registry(5, 120, "FR", "FR"))
    node = LocalNode(store, name="FR")
    answer = node.answer(Task(task_id="t", study_id="s", round=0, analysis="count"))
    assert answer.status == "answered", answer.reason
    before = len(node.read_view(["sex"], CohortSpec()))
    subprocess.run([sys.executable, "-c", WRITE, str(store)], check=True, timeout=120)
    assert len(node.read_view(["sex"], CohortSpec())) == before + 1


def _serve(live: LiveHub, store: Path, **agent_options: Any) -> tuple[NodeAgent, Counter[str]]:
    """A node agent on `store` for the live hub, and a count of its requests by route (read
    from the agent's own HTTP client as each request leaves)."""
    token = live.hub.add_node("FR", "FR")
    agent = NodeAgent(live.url, token, LocalNode(store, name="FR").answer, **agent_options)
    sent: Counter[str] = Counter()
    hooks = agent._client.event_hooks
    hooks["request"] = [*hooks["request"], lambda r: sent.update([f"{r.method} {r.url.path}"])]
    return agent, sent


COX = {"analysis": "cox", "outcome": "os", "covariates": ["sex", "age_at_diagnosis"]}


def _fit(live: LiveHub, agent: NodeAgent) -> dict[str, Any]:
    """A Cox fit over the one agent, served in a thread until the study is done."""
    stop = threading.Event()
    serving = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    serving.start()
    try:
        wait_until(lambda: live.hub.nodes()[0]["last_seen"], 30)
        client = HubClient(live.url, live.hub.add_user("ana", "researcher"))
        study = client.wait(client.submit(COX), max_wait=120)
        assert study["status"] == "done", study
        return study
    finally:
        stop.set()
        live.hub.waker.wake()
        serving.join(70)
        agent.close()


def test_an_answer_brings_the_next_round_in_its_own_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Round after round, the agent posts its answer and gets the next task in the same
    request: one request per round, not an answer then a poll; the fit is the one an older
    hub (no such feature: the agent then answers and polls as before) gives."""
    store = build_store(tmp_path / "FR.duckdb", random_registry(7, 300, "FR", "FR"))
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", SpecExecutor()) as live:
        agent, sent = _serve(live, store, wait=15, heartbeat=LONG)
        study = _fit(live, agent)
    rounds = study["result"]["rounds"]
    assert agent.answer_then_tasks and rounds >= 3
    assert sent["POST /api/node/answers"] == rounds
    # the first poll brings round 0; every later round came with the answer before it
    assert sent["GET /api/node/tasks"] == 1

    monkeypatch.setattr(routes, "NODE_FEATURES", [])  # an older hub: it lists no feature
    with LiveHub(f"sqlite:///{tmp_path / 'old.db'}", SpecExecutor()) as old:
        agent, sent = _serve(old, store, wait=15, heartbeat=LONG)
        before = _fit(old, agent)
    assert not agent.answer_then_tasks
    assert sent["GET /api/node/tasks"] >= before["result"]["rounds"]
    assert before["result"]["result"] == study["result"]["result"]


def test_the_answer_route_answers_older_agents_as_before(tmp_path: Path):
    """Without `wait`, an answer's receipt is what it always was (status and task id only);
    with it, the receipt also holds the node's open tasks; `/api/node/me` lists the feature."""
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", SpecExecutor()) as live:
        hub = live.hub
        token = hub.add_node("FR", "FR")
        owner = hub.authenticate(hub.add_user("ana", "researcher"))
        sids = []
        for _ in range(2):
            sid = running_count_study(hub, owner)
            task = Task(task_id="x", study_id=sid, round=0, analysis="count")
            hub.open_round(sid, 0, task, ["FR"], LONG)
            sids.append(sid)
        with live.client(token) as c:
            assert ANSWER_THEN_TASKS in c.get("/api/node/me").json()["features"]
            first, second = c.get("/api/node/tasks").json()["tasks"]
            old = c.post("/api/node/answers", json=_failed(first["task_id"]))
            assert old.json() == {"status": "accepted", "task_id": first["task_id"]}
            # the second task was delivered, not answered: `redeliver` brings it again
            new = c.post(
                "/api/node/answers",
                params={"wait": 0, "redeliver": True},
                json=_failed(first["task_id"]),
            ).json()
            assert new["status"] == "duplicate"
            assert [t["task_id"] for t in new["tasks"]] == [second["task_id"]]
            again = c.post(
                "/api/node/answers", params={"wait": 0.2}, json=_failed(second["task_id"])
            ).json()
            assert again == {"status": "accepted", "task_id": second["task_id"], "tasks": []}


def _failed(task_id: str) -> dict[str, Any]:
    return Answer(task_id=task_id, node="FR", status="failed", reason="r").model_dump(mode="json")
