"""`ccdp node policy show|set` and `ccdp node audit [--verify]` on a real store, and tampering."""

from __future__ import annotations

import json

from ccdp.federation.audit import AuditLog, audit_path
from ccdp.federation.local_node import LocalNode
from ccdp.federation.protocol import Task
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

    from ccdp.analyses.base import AggregatePart, EventTimesPart, Summary
    from ccdp.federation.node.pending import PendingStore
    from ccdp.federation.protocol import Answer

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
