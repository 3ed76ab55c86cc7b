"""An admin gives a run up (`POST /api/admin/runs/{id}/cancel`, `ccdp linkage cancel`): a run
whose node was revoked can never finish, so without it the nodes that uploaded would wait on it
and their encodings would stay at the service. A cancelled run keeps no encoding and no group,
its waiting nodes stop with the reason in their own audit logs and forget the run's key, a link
worker half-way through it stores nothing, and a finished run cannot be cancelled."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from ccdp.federation.linkage.node import RUN_KEYS, RunCancelled, link_status
from ccdp.federation.node.audit import AuditLog
from ccdp.store.config import load_node_config
from tests.conftest import run_ccdp
from tests.federation.netutil import wait_until
from tests.linkage.linkwire_kit import LiveService, partnership_copy, run_nodes
from tests.linkage.test_service import CHILDREN, _upload
from tests.linkage.test_service_worker import HeldLink, _admin_run


class ReturningLink(HeldLink):
    """The held link, which also says when it has returned its groups to the worker."""

    def __init__(self) -> None:
        super().__init__()
        self.returned = threading.Event()

    def __call__(self, clks: dict[str, list[bytes]], bits: int, t: float) -> dict[str, np.ndarray]:
        try:
            return super().__call__(clks, bits, t)
        finally:
            self.returned.set()


def test_a_run_whose_node_was_revoked_is_cancelled_and_its_nodes_stop(tmp_path: Path) -> None:
    stores, _truth = partnership_copy(tmp_path / "nodes")
    with LiveService(tmp_path) as svc:
        tokens = {cc: svc.token(cc) for cc in stores}
        admin = _admin_run(svc, list(stores))
        out: dict[str, Any] = {}
        alone = {"DE": stores["DE"]}
        de = threading.Thread(target=lambda: out.update(run_nodes(svc.url, alone, tokens, "r1")))
        de.start()
        # DE uploads and waits on PL, which is revoked: the run can never finish
        wait_until(lambda: svc.tables()["linkage_clks"], timeout=60)
        svc.service.revoke("PL")
        with svc.http(admin) as boss:
            r = boss.post("/api/admin/runs/r1/cancel")
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "cancelled"
            again = boss.post("/api/admin/runs/r1/cancel")
            audit = boss.get("/api/admin/audit").json()
        de.join(60)
        tables = svc.tables()
    assert again.status_code == 409 and "nothing to cancel" in again.json()["detail"]
    assert tables["linkage_clks"] == [] and tables["linkage_results"] == []
    cancelled = [r for r in audit["records"] if r["action"] == "linkage-cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["actor"] == "boss"
    assert cancelled[0]["detail"]["state"] == "uploading"
    assert cancelled[0]["detail"]["clks_deleted"] > 0
    assert audit["verified"]["ok"] is True
    assert isinstance(out["DE"], RunCancelled), out["DE"]
    assert "admin boss gave it up" in str(out["DE"])
    last = AuditLog.for_store(stores["DE"]).records()[-1]
    assert last["event"] == "linkage-cancelled" and last["run"] == "r1"
    assert link_status(stores["DE"])["last_event"]["event"] == "linkage-cancelled"
    assert "r1" not in (load_node_config(stores["DE"]).get(RUN_KEYS) or {})


def test_a_run_cancelled_while_linking_stores_no_group(tmp_path: Path) -> None:
    held = ReturningLink()
    with LiveService(tmp_path, link=held) as svc:
        tokens = {n: svc.token(n) for n in ("A", "B")}
        admin = _admin_run(svc, ["A", "B"])
        with svc.http(tokens["A"]) as a, svc.http(tokens["B"]) as b, svc.http(admin) as boss:
            rows = {p: CHILDREN[CHILDREN.patient_id.str.startswith(p)] for p in "ab"}
            assert a.post("/api/node/runs/r1/clks", json=_upload(rows["a"])).is_success
            assert b.post("/api/node/runs/r1/clks", json=_upload(rows["b"])).is_success
            assert held.started.wait(20)  # the worker holds every encoding in memory now
            assert boss.post("/api/admin/runs/r1/cancel").json()["state"] == "cancelled"
            assert svc.tables()["linkage_clks"] == []
            held.release.set()
            assert held.returned.wait(20)
            groups = a.get("/api/node/runs/r1/groups")
            status = a.get("/api/node/runs/r1").json()
    # the service stopped: its worker finished that link first, found the run no longer
    # linking and stored nothing
    tables = svc.tables()
    assert tables["linkage_clks"] == [] and tables["linkage_results"] == []
    assert svc.state("r1") == "cancelled"
    assert groups.status_code == 409 and "cancelled" in groups.json()["detail"]
    assert status["state"] == "cancelled" and status["wait"] is False


def test_who_may_cancel_and_what(tmp_path: Path) -> None:
    with LiveService(tmp_path) as svc:
        node = svc.token("A")
        svc.token("B")
        admin = _admin_run(svc, ["A", "B"])
        with svc.http(node) as a, svc.http(admin) as boss:
            assert a.post("/api/admin/runs/r1/cancel").status_code in (401, 403)
            assert boss.post("/api/admin/runs/nope/cancel").status_code == 404
            assert boss.post("/api/admin/runs/bad%20id/cancel").status_code == 422
            assert svc.state("r1") == "uploading"
        out = run_ccdp("linkage", "cancel", "r1", "--service", svc.url, "--token", admin)
        assert "run r1 cancelled" in out.stdout
        refused = run_ccdp(
            "linkage", "cancel", "r1", "--service", svc.url, "--token", admin, check=False
        )
    assert refused.returncode != 0
    assert "nothing to cancel" in refused.stderr + refused.stdout
    assert svc.state("r1") == "cancelled"
