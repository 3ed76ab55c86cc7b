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
