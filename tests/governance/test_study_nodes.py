"""A study of a project that names its `nodes`, one of which declined the project (issue 23,
item 13): the accepting nodes answer, the declining one is reported `declined` with its
custodian's reason, an unknown node is named as unknown; and the project's scope is the
study's default cohort (docs/governance.md). A real hub on loopback, a real node agent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ccdp.disclosure.policy import NodePolicy
from ccdp.federation.hub.studies import SpecExecutor
from ccdp.federation.node.agent import NodeAgent
from ccdp.federation.node.local import LocalNode
from ccdp.federation.node.projects import record_decision
from ccdp.governance.projects import ProjectTerms, load_project
from tests.federation.netutil import LiveHub
from tests.storekit import build_store, random_registry

PROJECT = {
    "title": "Leukaemia counts",
    "summary": "How many children had a leukaemia, by sex.",
    "institution": "Example University Hospital",
    "data_use": {"permission": "GRU"},
    "nodes": ["fr", "de"],
    "analyses": ["count"],
    "cohort": {"iccc_group": ["I"]},
    "expires": "2099-12-31",
}
LEUK = {"iccc_group": ["I"]}


class Network:
    """The hub, its people, and node fr's agent (de declined: it runs no agent)."""

    def __init__(self, live: LiveHub, tokens: dict[str, str], pid: str) -> None:
        self.live, self.tokens, self.pid = live, tokens, pid

    def submit(self, **spec: Any) -> Any:
        body = {"analysis": "count", "by": ["sex"], "timeout": 60, "project": self.pid, **spec}
        with self.live.client(self.tokens["ana"]) as c:
            return c.post("/api/studies", json={"spec": body})

    def finished(self, **spec: Any) -> dict[str, Any]:
        r = self.submit(**spec)
        assert r.status_code == 201, r.text
        with self.live.client(self.tokens["ana"]) as c:
            study = c.get(f"/api/studies/{r.json()['id']}", params={"wait": 30}).json()
        assert study["status"] == "done", study
        return study


@pytest.fixture
def net(tmp_path) -> Iterator[Network]:
    registry = random_registry(41, 400, "FR", "fr")
    registry = {
        **registry,
        "patient": [{**p, "consent": "DUO:0000042"} for p in registry["patient"]],
    }
    store = build_store(tmp_path / "fr.duckdb", registry)
    policy = NodePolicy(name="fr", exact_release="any", counts="exact")
    node = LocalNode(store, name="fr", policy=policy, from_hub=True)
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", SpecExecutor(), open_studies=False) as live:
        tokens = {
            "fr": live.hub.add_node("fr", "FR"),
            "de": live.hub.add_node("de", "DE"),
            "xx": live.hub.add_node("xx", "IT"),  # at the hub, but not named by the project
            "ana": live.hub.add_user("ana", "researcher"),
            "bob": live.hub.add_user("bob", "board"),
        }

        def call(who: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            with live.client(tokens[who]) as c:
                r = c.post(path, json=body)
            assert r.status_code < 300, r.text
            return r.json()

        pid = call("ana", "/api/projects", {"spec": PROJECT})["project_id"]
        call("bob", f"/api/projects/{pid}/review", {"decision": "approve"})
        record_decision(store, ProjectTerms.of(pid, load_project(PROJECT)), "accepted", None)
        call("fr", f"/api/node/projects/{pid}/decision", {"decision": "accepted"})
        declined = {"decision": "declined", "reason": "no ethics cover"}
        call("de", f"/api/node/projects/{pid}/decision", declined)
        agent = NodeAgent(live.url, tokens["fr"], node.answer, wait=0.5, heartbeat=0.2)
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        thread.start()
        try:
            yield Network(live, tokens, pid)
        finally:
            stop.set()
            thread.join(10)
            agent.close()


def test_named_nodes_one_declined_the_others_answer_and_it_is_reported_declined(net):
    named = net.finished(nodes=["fr", "de"], cohort=LEUK)
    everyone = net.finished(cohort=LEUK)  # without `nodes`: the behaviour it must match
    declined = {
        "status": "declined",
        "reason": f"the custodian of de declined project {net.pid}: no ethics cover",
    }
    for study in (named, everyone):
        assert study["result"]["nodes"]["fr"]["status"] == "answered", study
        assert study["result"]["nodes"]["de"] == declined
        assert study["result"]["min_nodes_met"] is True
    assert named["result"]["result"] == everyone["result"]["result"]
    assert named["nodes"] == ["fr"]  # only the accepting node was asked


def test_an_unknown_node_is_named_as_unknown_and_min_nodes_counts_only_accepting_nodes(net):
    r = net.submit(nodes=["fr", "de", "nowhere"], cohort=LEUK)
    assert r.status_code == 400 and "unknown or revoked nodes: nowhere" in r.json()["detail"]
    r = net.submit(nodes=["fr", "xx"], cohort=LEUK)  # a node the project does not ask
    assert r.status_code == 400 and "xx not asked by project" in r.json()["detail"]
    r = net.submit(nodes=["fr", "de"], min_nodes=2, cohort=LEUK)
    detail = r.json()["detail"]
    assert r.status_code == 400 and "min_nodes: 2" in detail, detail
    assert "de: declined" in detail  # says why fewer nodes may be asked than were named


def test_the_project_scope_is_the_study_default_cohort(net):
    scoped = net.finished(cohort=LEUK)
    bare = net.finished()  # leaves iccc_group out: runs within the project's scope
    assert bare["spec"]["cohort"] == {"iccc_group": ["I"]}  # the study shows what it ran
    assert bare["result"]["nodes"]["fr"]["status"] == "answered", bare
    assert bare["result"]["result"] == scoped["result"]["result"]
    other = net.finished(cohort={"sex": ["female"]})  # another variable: the scope is added
    assert other["spec"]["cohort"] == {"sex": ["female"], "iccc_group": ["I"]}
    assert other["result"]["nodes"]["fr"]["status"] == "answered", other
    r = net.submit(cohort={"iccc_group": ["I", "II"]})  # asks outside the scope: refused
    assert r.status_code == 400 and "iccc_group goes beyond the project's scope" in r.text
