"""Disclosure alerts to the hub's board and the studies each node accepted (issue 28, item 4 and
the governance part), over real HTTP on loopback: a node that released a registered triple
isolating one child alerts the board once (project and studies, a range; never a record), the
hub audits it, and the board reads it on its route, its page and its command; the node reports
which registered studies its custodian accepted. Bad posts are 4xx, never 500."""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ccdp.federation.hub.models import DisclosureAlertRow
from ccdp.federation.hub.studies import SpecExecutor
from ccdp.federation.node import alertbox
from ccdp.federation.node.agent import NodeAgent
from ccdp.federation.node.audit import AuditLog
from ccdp.federation.node.detection import alerts as node_alerts
from ccdp.federation.node.hubreports import HubReports
from ccdp.federation.node.local import LocalNode
from ccdp.federation.node.projects import record_decision
from ccdp.federation.study import StudySpec
from ccdp.governance.projects import ProjectSpec, ProjectTerms
from ccdp.governance.registered import study_hash
from ccdp.wire.alerts import DisclosureAlert
from tests.conftest import run_ccdp
from tests.disclosure.test_registered_audit import _registry, assert_says_nobody, lonely_day, triple
from tests.federation.netutil import LiveHub, wait_until
from tests.storekit import build_store
from tests.web.test_pages_http import signed_in

IN_A_YEAR = (date.today() + timedelta(days=365)).isoformat()


def project_spec(studies: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "title": "Diagnosis windows",
        "summary": "Counts by diagnosis window.",
        "institution": "Example University Hospital",
        "data_use": {"permission": "HMB", "commercial": False},
        "nodes": ["FR"],
        "analyses": ["count"],
        "expires": IN_A_YEAR,
        "studies": studies,
    }


def h(spec: dict[str, Any]) -> str:
    s = StudySpec.model_validate(spec)
    return study_hash(s.analysis, s.params, s.cohort_json())


@pytest.fixture
def live(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with LiveHub(url, SpecExecutor(), open_studies=False) as hub:
        hub.tokens = {  # type: ignore[attr-defined]
            "FR": hub.hub.add_node("FR", "FR"),
            "DE": hub.hub.add_node("DE", "DE"),
            "ana": hub.hub.add_user("ana", "researcher"),
            "bob": hub.hub.add_user("bob", "board"),
        }
        yield hub


def call(live: LiveHub, who: str, method: str, path: str, ok: bool = True, **kw: Any) -> Any:
    with live.client(live.tokens[who]) as c:  # type: ignore[attr-defined]
        r = c.request(method, path, **kw)
    if ok:
        assert r.status_code < 300, r.text
        return r.json()
    return r


def approved_project(live: LiveHub, studies: list[dict[str, Any]]) -> str:
    pid = call(live, "ana", "POST", "/api/projects", json={"spec": project_spec(studies)})
    call(
        live,
        "bob",
        "POST",
        f"/api/projects/{pid['project_id']}/review",
        json={"decision": "approve"},
    )
    return str(pid["project_id"])


def an_alert(pid: str, **changes: Any) -> dict[str, Any]:
    body = {
        "alert_id": uuid.uuid4().hex,
        "kind": "isolating-combination",
        "project": pid,
        "study_id": "s2",
        "findings": [{"studies": ["s0", "s1", "s2"], "records": "1–4", "integer": True}],
        "detected_at": datetime.now(UTC).isoformat(),
    }
    return {**body, **changes}


# -- the whole path ------------------------------------------------------------------------------
def test_a_registered_triple_alerts_the_board_once_naming_studies_never_a_child(
    live: LiveHub, tmp_path: Path
) -> None:
    registry = _registry()
    studies = triple(lonely_day(registry))
    pid = approved_project(live, studies)
    store = build_store(tmp_path / "FR.duckdb", registry)
    # the custodian accepts at the node (despite the acceptance audit: the demo's choice too)
    terms = ProjectTerms.of(pid, ProjectSpec.model_validate(project_spec(studies)))
    record_decision(store, terms, "accepted", "despite the audit")
    call(live, "FR", "POST", f"/api/node/projects/{pid}/decision", json={"decision": "accepted"})

    node = LocalNode(store, name="FR", from_hub=True)
    events: list[str] = []
    agent = NodeAgent(
        live.url,
        live.tokens["FR"],  # type: ignore[attr-defined]
        node.answer,
        wait=0.5,
        heartbeat=0.2,
        on_event=events.append,
        reports=HubReports(store),
    )
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        # the node reports which registered studies its custodian accepted
        def reported() -> Any:
            return call(live, "bob", "GET", f"/api/projects/{pid}")["nodes"]["FR"]["reported"]

        got = wait_until(reported, 20)
        assert got["decision"] == "accepted" and got["accepted"] == [h(s) for s in studies]
        assert got["not_accepted"] == [] and got["other"] == []

        ids = []
        for spec in studies:
            sid = call(
                live,
                "ana",
                "POST",
                "/api/studies",
                json={"spec": {**spec, "project": pid, "nodes": ["FR"]}},
            )["id"]
            done = call(live, "ana", "GET", f"/api/studies/{sid}", params={"wait": 30})
            assert done["status"] == "done", done
            ids.append(sid)
        shown = wait_until(lambda: call(live, "bob", "GET", "/api/board/alerts"), 30)
    finally:
        stop.set()
        thread.join(10)
        agent.close()

    [alert] = shown
    assert alert["node"] == "FR" and alert["project"] == pid
    assert alert["project_title"] == "Diagnosis windows"
    assert alert["kind"] == "isolating-combination" and alert["study"]["study_id"] == ids[2]
    named = {st["title"] for f in alert["findings"] for st in f["studies"]}
    assert named == {"Window A", "Window B", "Window C"}
    assert all(st["known"] for f in alert["findings"] for st in f["studies"])
    assert all(f["records"] == "1–4" for f in alert["findings"])
    text = json.dumps(alert, ensure_ascii=False)
    assert_says_nobody(re.sub(r"\d{4}-\d{2}-\d{2}T[\d:.+]+", "", text), registry)

    # audited at both ends, and sent once
    actions = [e["action"] for e in live.hub.audit_log()]
    assert "disclosure-alert" in actions and "project-node-studies" in actions
    logged = [r.get("event") for r in AuditLog.for_store(store).records()]
    assert logged.count("disclosure-alert") == 1 and logged.count("disclosure-alert-sent") == 1
    [entry] = alertbox.entries(store)
    assert entry["sent_at"] is not None and entry["hub"].startswith("received")
    assert node_alerts(store)[0]["sent_to_hub"]["at"] == entry["sent_at"]
    again = NodeAgent(live.url, live.tokens["FR"], node.answer, reports=HubReports(store))  # type: ignore[attr-defined]
    again.name = "FR"
    again.send_reports()
    again.close()
    with live.hub.context.sessions() as s:
        assert s.scalar(select(func.count()).select_from(DisclosureAlertRow)) == 1

    # the board reads it on its page and with its command; a researcher cannot
    page = signed_in(live, live.tokens["bob"]).get("/governance")  # type: ignore[attr-defined]
    assert page.status_code == 200 and 'id="alerts"' in page.text
    assert "Window A" in page.text and "1–4" in page.text
    assert f'data-study="{h(studies[0])}" data-accepted="yes"' in page.text
    researcher = signed_in(live, live.tokens["ana"]).get("/governance")  # type: ignore[attr-defined]
    assert 'id="alerts"' not in researcher.text
    assert call(live, "ana", "GET", "/api/board/alerts", ok=False).status_code == 403
    out = run_ccdp("hub", "alerts", "--db", live.db_url).stdout
    assert "node FR, project Diagnosis windows" in out
    [line] = [x for x in out.splitlines() if "isolate 1–4 records" in x]
    assert all(f"Window {w}" in line for w in "ABC")


# -- the hub's routes ----------------------------------------------------------------------------
def test_an_alert_is_kept_once_and_audited(live: LiveHub) -> None:
    pid = approved_project(live, [])
    body = an_alert(pid)
    first = call(live, "FR", "POST", "/api/node/alerts", json=body)
    assert call(live, "FR", "POST", "/api/node/alerts", json=body) == first
    changed = {**body, "findings": [{**body["findings"][0], "integer": False}]}
    r = call(live, "FR", "POST", "/api/node/alerts", ok=False, json=changed)
    assert r.status_code == 409 and "other content" in r.json()["detail"]
    [shown] = call(live, "bob", "GET", "/api/board/alerts", params={"project": pid})
    assert [st["known"] for st in shown["findings"][0]["studies"]] == [False] * 3
    assert call(live, "bob", "GET", "/api/board/alerts", params={"project": "other"}) == []
    [audited] = [e for e in live.hub.audit_log() if e["action"] == "disclosure-alert"]
    assert audited["actor"] == "node:FR"
    assert audited["detail"]["studies"] == ["s0", "s1", "s2"]
    assert audited["detail"]["records"] == ["1–4"]
    skipped = an_alert(pid, kind="detection-skipped", findings=[], limit=5000)
    assert call(live, "FR", "POST", "/api/node/alerts", json=skipped)["alert_id"]


@pytest.mark.parametrize(
    ("changes", "status", "detail"),
    [
        ({"records": [17, 230]}, 422, "Extra inputs"),  # no field for record ids
        ({"findings": [{"studies": ["s0"], "records": "3", "integer": True}]}, 422, "records"),
        (
            {"findings": [{"studies": ["Jane Doe 2009-03-04"], "records": "1–4", "integer": True}]},
            422,
            "studies",
        ),
        (
            {"findings": [{"studies": ["s0"], "records": "1–4", "integer": True, "ids": [1]}]},
            422,
            "Extra inputs",
        ),
        ({"findings": []}, 422, "at least one finding"),
        (
            {"findings": [{"studies": ["s0"], "records": "1–4", "integer": True}] * 51},
            422,
            "findings",
        ),
        ({"detected_at": "2026-01-01T00:00:00"}, 422, "time zone"),
        ({"alert_id": "short"}, 422, "alert_id"),
        ({"kind": "patient"}, 422, "kind"),
        ({"project": "x" * 65}, 422, "project"),
        ({"project": "no-such-project"}, 404, "no project"),
    ],
)
def test_bad_alerts_are_4xx_never_500(
    live: LiveHub, changes: dict[str, Any], status: int, detail: str
) -> None:
    pid = approved_project(live, [])
    r = call(live, "FR", "POST", "/api/node/alerts", ok=False, json=an_alert(pid, **changes))
    assert r.status_code == status and detail in r.text, r.text


def test_only_a_node_named_by_the_project_posts_and_only_nodes_post(live: LiveHub) -> None:
    pid = approved_project(live, [])
    r = call(live, "DE", "POST", "/api/node/alerts", ok=False, json=an_alert(pid))
    assert r.status_code == 404  # the project does not name DE
    r = call(live, "ana", "POST", "/api/node/alerts", ok=False, json=an_alert(pid))
    assert r.status_code == 403
    with live.client() as c:
        assert c.post("/api/node/alerts", json=an_alert(pid)).status_code == 401


def test_accepted_studies_are_kept_per_node_and_show_what_was_not_accepted(live: LiveHub) -> None:
    a, b = {"title": "A", "analysis": "count", "by": ["sex"]}, {"title": "B", "analysis": "count"}
    pid = approved_project(live, [a, b])
    now = datetime.now(UTC).isoformat()
    one = {
        "project_id": pid,
        "decision": "accepted",
        "studies": [h(a), "f" * 64],
        "decided_at": now,
    }
    got = call(
        live,
        "FR",
        "PUT",
        "/api/node/accepted-studies",
        json={"projects": [one, {**one, "project_id": "elsewhere"}]},
    )
    assert got == {"node": "FR", "projects": [pid], "ignored": ["elsewhere"]}
    shown = call(live, "bob", "GET", f"/api/projects/{pid}")["nodes"]["FR"]["reported"]
    assert shown["accepted"] == [h(a)] and shown["not_accepted"] == [h(b)]
    assert shown["other"] == ["f" * 64]
    # the same report again changes nothing (audited once); an empty one clears it
    call(live, "FR", "PUT", "/api/node/accepted-studies", json={"projects": [one]})
    audited = [e for e in live.hub.audit_log() if e["action"] == "project-node-studies"]
    assert len(audited) == 1
    call(live, "FR", "PUT", "/api/node/accepted-studies", json={"projects": []})
    assert call(live, "bob", "GET", f"/api/projects/{pid}")["nodes"]["FR"]["reported"] is None
    # DE is not named by the project: ignored
    got = call(live, "DE", "PUT", "/api/node/accepted-studies", json={"projects": [one]})
    assert got["ignored"] == [pid]
    bad = [
        {"projects": [{**one, "studies": ["not-a-hash"]}]},
        {"projects": [{**one, "decision": "declined"}]},  # declined with studies
        {"projects": [one, one]},
        {"projects": [{**one, "studies": [h(a), h(a)]}]},
        {"projects": [{**one, "note": "x"}]},
    ]
    for body in bad:
        r = call(live, "FR", "PUT", "/api/node/accepted-studies", ok=False, json=body)
        assert r.status_code == 422, r.text


# -- the node's record ---------------------------------------------------------------------------
def test_the_node_queues_alerts_already_logged_and_sends_each_once(tmp_path: Path) -> None:
    store = tmp_path / "FR.duckdb"
    log = AuditLog.for_store(store)
    now = datetime.now(UTC).isoformat()
    log.append({"time": now, "event": "answer", "study_id": "x"})
    rec = log.append(
        {
            "time": now,
            "event": "disclosure-alert",
            "project": "p1",
            "study_id": "s2",
            "findings": [
                {"sources": ["study s0", "study s2"], "records": "1–4", "integer": True},
                {"sources": ["earlier releases of this node"], "records": "1–4", "integer": True},
            ],
        }
    )
    local = log.append(
        {
            "time": now,
            "event": "disclosure-alert",
            "project": "a local file's project",  # not an id a hub could hold
            "findings": [{"sources": ["study s0"], "records": "1–4", "integer": False}],
        }
    )
    # the record is opened first after the log holds alerts: they are queued then
    [pending] = HubReports(store).alerts()
    assert isinstance(pending, DisclosureAlert)
    assert pending.project == "p1" and pending.findings[0].studies == ["s0", "s2"]
    assert pending.more == 1  # a finding naming no study is counted, not listed
    entries = alertbox.entries(store)
    assert [e["seq"] for e in entries] == [rec["seq"], local["seq"]]
    assert entries[1]["alert"] is None and entries[1]["hub"].startswith("not sendable")
    alertbox.queue_alert(store, rec)  # queued already: not twice
    assert len(alertbox.entries(store)) == 2
    alertbox.mark_sent(store, pending.alert_id, "received")
    alertbox.mark_sent(store, pending.alert_id, "received")  # once
    assert alertbox.unsent(store) == []
    sent = [r for r in log.records() if r["event"] == "disclosure-alert-sent"]
    assert len(sent) == 1 and sent[0]["alert_seq"] == rec["seq"]
    log.verify()  # the chain holds
    # a log moved aside and started again: its seq 1 is another record, queued again
    (tmp_path / "FR.audit.jsonl").rename(tmp_path / "old.jsonl")
    (tmp_path / "FR.audit.head").unlink()
    again = {k: v for k, v in local.items() if k not in ("seq", "prev", "hash")}
    fresh = log.append({**again, "project": "p2"})
    assert fresh["seq"] == 1
    alertbox.queue_alert(store, fresh)
    [queued] = [e for e in alertbox.entries(store) if e["record"] == fresh["hash"]]
    assert queued["seq"] == 1 and [a.project for a in alertbox.unsent(store)] == ["p2"]


def test_a_store_without_alerts_or_log_reports_nothing(tmp_path: Path) -> None:
    reports = HubReports(tmp_path / "FR.duckdb")
    assert reports.alerts() == []
    body, mark = reports.acceptances() or (None, None)
    assert body is not None and body.projects == []
    reports.acceptances_sent(mark)  # type: ignore[arg-type]
    assert reports.acceptances() is None  # unchanged since sent
