"""`ccdp node policy show|set` and `ccdp node audit [--verify]` on a real store, and tampering."""

from __future__ import annotations

import json

from ccdp.federation.node.audit import AuditLog, audit_path
from ccdp.federation.node.local import LocalNode
from ccdp.wire.protocol import Task
from tests.storekit import build_store, random_registry


def test_policy_show_set(ccdp, tmp_path):
    store = build_store(tmp_path / "n.duckdb", random_registry(1, 50, "FR", "n"))
    shown = json.loads(ccdp("node", "policy", "show", "--store", store, "--json").stdout)
    assert shown["min_cell"] == 5 and shown["release"] == "automatic"
    ccdp("node", "policy", "set", "min_cell", "8", "--store", store)
    ccdp("node", "policy", "set", "allowed_analyses", "[count, km]", "--store", store)
    shown = json.loads(ccdp("node", "policy", "show", "--store", store, "--json").stdout)
    assert shown["min_cell"] == 8 and shown["allowed_analyses"] == ["count", "km"]
    bad = ccdp("node", "policy", "set", "min_cell", "0", "--store", store, check=False)
    assert bad.returncode == 2 and "min_cell" in bad.stderr


def test_audit_chain_detects_tampering(ccdp, tmp_path):
    store = build_store(tmp_path / "n.duckdb", random_registry(1, 80, "FR", "n"))
    node = LocalNode(store)
    for i, analysis in enumerate(["count", "crosstab", "nope"]):
        node.answer(
            Task(
                task_id=f"t{i}",
                study_id=f"s{i}",
                round=0,
                analysis=analysis,
                params={"by": ["sex"]},
            )
        )
    out = ccdp("node", "audit", "--store", store, "--verify").stdout
    assert "3 record(s)" in out
    records = [
        json.loads(x) for x in ccdp("node", "audit", "--store", store, "--json").stdout.splitlines()
    ]
    assert [r["status"] for r in records] == ["answered", "answered", "failed"]
    assert records[0]["summary"]["total"]["cells"][0]["n"] == 80
    # edit a released number in the middle of the log
    path = audit_path(store)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"status": "answered"', '"status": "refused"')
    path.write_text("\n".join(lines) + "\n")
    bad = ccdp("node", "audit", "--store", store, "--verify", check=False)
    assert bad.returncode == 2 and "record 2 was altered" in bad.stderr
    # deleting a record breaks the chain too
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert "seq" in ccdp("node", "audit", "--store", store, "--verify", check=False).stderr
    assert AuditLog(path).records()[0]["seq"] == 1


def test_pending_shows_what_would_leave_in_words_and_in_full(ccdp, tmp_path):
    """An operator reviewing a held Cox table sees its shape in the list and every number with
    --show, the packed moment sums spelled out (not base64)."""
    import numpy as np

    from ccdp.federation.node.pending import PendingStore
    from ccdp.wire.protocol import Answer
    from ccdp.wire.summary import AggregatePart, EventTimesPart, Summary

    store = tmp_path / "fr.duckdb"
    moments = np.array([[0.5, 1.25], [2.0, -3.75], [1e-3, 7.0]])
    summary = Summary(
        parts={
            "risk": EventTimesPart(
                group_by=["arm"],
                columns={
                    "group": np.array(["A", "A", "B"]),
                    "time": np.array([3.0, 7.0, 5.0]),
                    "d": np.array([1, 2, 1]),
                    "a": moments,
                },
                group_sizes={"A": 12, "B": 9},
            ),
            "fit": AggregatePart(n=21, n_params=1, values={"loglik": -40.5}),
        }
    ).to_dict()
    assert summary["risk"]["columns"]["a"]["encoding"] == "float64-le-base64"
    task = Task(task_id="study1-r1", study_id="study1", round=1, analysis="cox")
    PendingStore(store).hold(
        task, Answer(task_id=task.task_id, node="fr", status="answered", summary=summary)
    )
    listed = json.loads(ccdp("node", "pending", "--store", store, "--json").stdout)
    assert listed[0]["summary"].splitlines() == [
        "risk: event-time table, 3 row(s) per day, columns group, time, d, a; "
        "group sizes A=12, B=9",
        "fit: model sums over 21 record(s), 1 parameter(s)",
    ]
    full = json.loads(ccdp("node", "pending", "--store", store, "--show", "study1").stdout)
    assert full["summary"]["risk"]["columns"]["a"] == moments.tolist()
    assert full["summary"]["risk"]["columns"]["group"] == ["A", "A", "B"]
    assert full["summary"]["fit"]["values"] == {"loglik": -40.5}
    proc = ccdp("node", "pending", "--store", store, "--show", "nope", check=False)
    assert proc.returncode != 0 and "no pending answer 'nope'" in proc.stderr


def test_pending_show_gives_the_custodian_study_requester_cohort_and_analysis(ccdp, tmp_path):
    """--show says which study asks, who asked, for which cohort and analysis; a file held
    under protocol 3 (before tasks carried title and requester) still reads."""
    from ccdp.federation.node.pending import PendingStore, pending_dir
    from ccdp.wire.protocol import Answer

    store = tmp_path / "fr.duckdb"
    task = Task(
        task_id="s2-r0",
        study_id="s2",
        round=0,
        analysis="km",
        params={"outcome": "relapse_efs", "by": ["relapse_timing"]},
        cohort={"iccc_subgroup": ["Ia"], "relapsed": [1]},
        title="EFS after relapse of ALL",
        requester="researcher",
    )
    PendingStore(store).hold(task, Answer(task_id=task.task_id, node="fr", status="answered"))
    full = json.loads(ccdp("node", "pending", "--store", store, "--show", "s2").stdout)
    assert full["title"] == "EFS after relapse of ALL"
    assert full["requester"] == "researcher"
    assert full["cohort"] == {"iccc_subgroup": ["Ia"], "relapsed": [1]}
    assert full["analysis"] == "km"
    assert full["params"] == {"outcome": "relapse_efs", "by": ["relapse_timing"]}
    old = json.loads((pending_dir(store) / "s2-r0.json").read_text())
    old["task"]["protocol_version"] = old["answer"]["protocol_version"] = 3
    for key in ("title", "requester"):
        del old["task"][key]
    (pending_dir(store) / "s2-r0.json").write_text(json.dumps(old))
    again = json.loads(ccdp("node", "pending", "--store", store, "--show", "s2").stdout)
    assert again["title"] == again["requester"] == "(not sent by the hub)"


def test_hub_tasks_carry_the_study_title_and_its_submitter(tmp_path):
    """The task a node receives through the hub names the study and who submitted it. No node
    answers: the round ends when the test moves the hub's clock past its deadline."""
    import threading

    from ccdp.federation.hub.app import Hub
    from ccdp.federation.hub.db import open_database
    from ccdp.federation.hub.runner import HubTransport
    from tests.federation.clock import FakeClock
    from tests.federation.netutil import wait_until

    clock = FakeClock()
    hub = Hub(open_database(f"sqlite:///{tmp_path / 'hub.db'}"), open_studies=True, clock=clock)
    hub.add_node("FR", "FR")
    token = hub.add_user("ana", "researcher")
    sid = hub.create_study(
        {"title": "OS by group", "analysis": "count"},
        analysis="count",
        title="OS by group",
        nodes=["FR"],
        min_nodes=1,
        timeout=3600,
        owner=hub.authenticate(token),
    )
    task = Task(task_id="x", study_id="local", round=0, analysis="count", title="OS by group")
    transport = HubTransport(hub, sid, ["FR"], 3600, threading.Event())
    answers: dict = {}
    asking = threading.Thread(target=lambda: answers.update(transport.ask(task, ["FR"])))
    asking.start()
    sent = Task.model_validate(wait_until(lambda: _round_task(hub, sid)))
    assert (sent.title, sent.requester, sent.study_id) == ("OS by group", "ana", sid)
    clock.advance(3601)
    hub.waker.wake()
    asking.join(30)
    assert answers["FR"].status == "failed" and "timeout (3600 s)" in str(answers["FR"].reason)


def _round_task(hub, study_id: str) -> dict:
    from sqlalchemy import select

    from ccdp.federation.hub.models import RoundRow

    with hub.sessions() as s:
        return s.scalar(select(RoundRow.task).where(RoundRow.study_id == study_id))
