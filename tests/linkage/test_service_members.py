"""The service's members: `ccdp linkage members` lists nodes and admins with their kind and
whether revoked (never a token), `ccdp linkage revoke NAME` revokes one; a revoked member's
token is refused (401) on every route, a revoked node cannot be named in a new run, and both
commands leave audit records. A node refused by the service writes the refusal to its own
audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccdp.federation.linkage.client import LinkageClient, LinkageRequestError
from ccdp.federation.linkage.node import run
from ccdp.federation.node.audit import AuditLog, audit_path
from tests.conftest import run_ccdp
from tests.linkage.linkwire_kit import LiveService, partnership_copy


def test_revoked_tokens_are_refused_and_join_no_run(tmp_path: Path) -> None:
    with LiveService(tmp_path) as svc:
        tokens = {n: svc.token(n) for n in ("A", "B", "C")}
        admin, other_admin = svc.token("boss", "admin"), svc.token("ops", "admin")
        with svc.http(admin) as boss:
            assert boss.post(
                "/api/admin/runs", json={"run_id": "r1", "nodes": ["A", "C"]}
            ).is_success
        svc.service.revoke("C")
        svc.service.revoke("ops")
        with svc.http(tokens["C"]) as c:
            for r in (c.get("/api/node/runs/r1"), c.post("/api/node/runs/r1/confirm")):
                assert r.status_code == 401 and "revoked" in r.json()["detail"]
        with svc.http(other_admin) as ops:
            assert ops.get("/api/admin/runs/r1").status_code == 401
        with svc.http(admin) as boss:
            r = boss.post("/api/admin/runs", json={"run_id": "r2", "nodes": ["A", "C"]})
            assert r.status_code == 409 and "node C is revoked" in r.json()["detail"]
            assert boss.post(
                "/api/admin/runs", json={"run_id": "r3", "nodes": ["A", "B"]}
            ).is_success
            audit = boss.get("/api/admin/audit").json()
        members = {m["name"]: m for m in svc.service.members()}
    assert audit["verified"]["ok"] is True
    revoked = [
        (r["action"], r["detail"]["name"]) for r in audit["records"] if "revoke" in r["action"]
    ]
    assert revoked == [("revoke-node", "C"), ("revoke-admin", "ops")]
    assert members["C"]["revoked"] and members["ops"]["revoked"] and not members["A"]["revoked"]
    assert {m["kind"] for m in members.values()} == {"node", "admin"}
    assert not any(t in json.dumps(members) for t in tokens.values())


def test_members_and_revoke_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "linkage.db")
    tokens = {
        n: run_ccdp("linkage", kind, n, "--db", db).stdout.strip()
        for n, kind in (("DE", "add-node"), ("PL", "add-node"), ("boss", "add-admin"))
    }
    out = run_ccdp("linkage", "revoke", "PL", "--db", db)
    assert out.stdout.strip() == "node PL revoked: its token is refused from now on"
    again = run_ccdp("linkage", "revoke", "PL", "--db", db, check=False)
    assert again.returncode == 2 and "revoked already" in again.stderr
    nobody = run_ccdp("linkage", "revoke", "XX", "--db", db, check=False)
    assert nobody.returncode == 2 and "no member named 'XX'" in nobody.stderr
    listed = run_ccdp("linkage", "members", "--db", db).stdout.splitlines()
    assert [line.split()[:3] for line in listed] == [
        ["boss", "admin", "active"],
        ["DE", "node", "active"],
        ["PL", "node", "revoked"],
    ]
    as_json = json.loads(run_ccdp("linkage", "members", "--db", db, "--json").stdout)
    assert {m["name"]: m["revoked"] for m in as_json} == {"boss": False, "DE": False, "PL": True}
    text = "\n".join(listed) + json.dumps(as_json)
    assert not any(t in text for t in tokens.values())
    from ccdp.federation.hub import audit as hub_audit
    from ccdp.federation.linkage.db import open_database

    actions = [r["action"] for r in hub_audit.records(open_database(db))]
    assert actions == ["add-node", "add-node", "add-admin", "revoke-node"] + ["list-members"] * 2


def test_a_refused_node_writes_the_refusal_to_its_audit_log(tmp_path: Path) -> None:
    stores, _ = partnership_copy(tmp_path / "nodes")
    with LiveService(tmp_path) as svc:
        tokens = {cc: svc.token(cc) for cc in stores}
        svc.service.revoke("PL")
        with LinkageClient(svc.url, tokens["PL"]) as pl, pytest.raises(LinkageRequestError) as err:
            run(stores["PL"], pl, "r1", timeout=5)
    assert err.value.status == 401
    entry = AuditLog.for_store(stores["PL"]).records()[-1]
    assert entry["event"] == "linkage-refused" and entry["status"] == 401
    assert entry["run"] == "r1" and entry["step"] == "status" and "revoked" in entry["reason"]
    assert tokens["PL"] not in audit_path(stores["PL"]).read_text()
    AuditLog.for_store(stores["PL"]).verify()
