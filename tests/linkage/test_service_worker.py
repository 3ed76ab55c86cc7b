"""Linking runs in the service's worker, not in a request: the last upload returns while the run
is `linking` (held here by a link the test releases), nodes and admins see the state move to
`linked`; a link that fails leaves the run `failed` with a reason that names no record and no
encoding behind, and each node writes the failure to its own audit log; a run left `linking` by
a stopped service is linked by the next one."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ccdp.federation.linkage import core
from ccdp.federation.linkage.client import LinkageClient
from ccdp.federation.linkage.db import open_database
from ccdp.federation.linkage.node import RunFailed, link_status, run
from ccdp.federation.linkage.protocol import CreateRun, Upload
from ccdp.federation.linkage.service import LinkageService
from ccdp.federation.node.audit import AuditLog, audit_path
from tests.linkage.linkwire_kit import (
    LiveService,
    found_pairs,
    link_groups,
    partnership_copy,
    run_nodes,
    true_pairs,
)
from tests.linkage.test_service import CHILDREN, _upload


class HeldLink:
    """The real linkage core, held until the test releases it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, clks: dict[str, list[bytes]], bits: int, t: float) -> dict[str, np.ndarray]:
        self.started.set()
        assert self.release.wait(30), "the test never released the link"
        return core.link_registries(clks, bits, t)


def _leaky_failure(clks: dict[str, list[bytes]], bits: int, t: float) -> dict[str, np.ndarray]:
    """A core that fails with a message quoting an encoding (a reason must not carry it on)."""
    first = next(iter(clks.values()))[0]
    raise MemoryError(f"cannot link record {first.hex()}")


def _admin_run(svc: LiveService, nodes: list[str], run_id: str = "r1") -> str:
    admin = svc.token("boss", "admin")
    with LinkageClient(svc.url, admin) as boss:
        boss.create_run(run_id, nodes)
    return admin


def test_the_last_upload_returns_while_the_worker_links(tmp_path: Path) -> None:
    held = HeldLink()
    with LiveService(tmp_path, link=held) as svc:
        tokens = {n: svc.token(n) for n in ("A", "B")}
        admin = _admin_run(svc, ["A", "B"])
        a, b, boss = svc.http(tokens["A"]), svc.http(tokens["B"]), svc.http(admin)
        with a, b, boss:
            rows = {p: CHILDREN[CHILDREN.patient_id.str.startswith(p)] for p in "ab"}
            assert a.post("/api/node/runs/r1/clks", json=_upload(rows["a"])).is_success
            last = b.post("/api/node/runs/r1/clks", json=_upload(rows["b"]))
            # answered although the link has not finished (it is held until released below)
            assert last.json()["state"] == "linking" and last.json()["wait"] is True
            assert held.started.wait(20)
            seen = a.get("/api/node/runs/r1").json()
            assert seen["state"] == "linking" and seen["wait"] is True
            assert "linking_seconds" in seen
            assert boss.get("/api/admin/runs/r1").json()["state"] == "linking"
            assert len(svc.tables()["linkage_clks"]) == 6  # held: not linked yet
            r = a.get("/api/node/runs/r1/groups")
            assert r.status_code == 409 and "linking" in r.json()["detail"]
            held.release.set()
            # a long-poll is answered when the state moves on, well before its 20 s
            assert a.get("/api/node/runs/r1?wait=20").json()["state"] == "linked"
            assert boss.get("/api/admin/runs/r1").json()["state"] == "linked"
            assert svc.tables()["linkage_clks"] == []
            assert len(a.get("/api/node/runs/r1/groups").json()["records"]) == 2
            actions = [x["action"] for x in boss.get("/api/admin/audit").json()["records"]]
    assert actions.index("linkage-linking") < actions.index("linkage-linked")


def test_a_failed_link_keeps_no_encoding_and_names_no_record(tmp_path: Path) -> None:
    stores, _truth = partnership_copy(tmp_path / "nodes")
    with LiveService(tmp_path, link=_leaky_failure) as svc:
        tokens = {cc: svc.token(cc) for cc in stores}
        admin = _admin_run(svc, list(stores))
        out = run_nodes(svc.url, stores, tokens, "r1", timeout=30)
        with svc.http(admin) as boss:
            status = boss.get("/api/admin/runs/r1").json()
            audit = boss.get("/api/admin/audit").json()
        tables = svc.tables()
    assert status["state"] == "failed"
    assert status["error"] == (
        "linking failed (MemoryError); the service's operator has the details"
    )
    assert tables["linkage_clks"] == [] and tables["linkage_results"] == []
    failed = [r for r in audit["records"] if r["action"] == "linkage-failed"]
    assert len(failed) == 1 and failed[0]["detail"]["clks_deleted"] > 0
    for cc, store in stores.items():
        assert isinstance(out[cc], RunFailed), out[cc]
        assert "MemoryError" in str(out[cc])
        records = AuditLog.for_store(store).records()
        entry = records[-1]
        assert entry["event"] == "linkage-failed" and entry["run"] == "r1"
        assert entry["step"] == "linking" and "MemoryError" in entry["reason"]
        AuditLog.for_store(store).verify()
        # no record-level value in the node's audit log: no encoding, no stored key
        text = audit_path(store).read_text()
        assert "cannot link record" not in text
        assert link_status(store)["last_event"]["event"] == "linkage-failed"
    assert "cannot link record" not in str(audit)


def test_a_run_left_linking_is_linked_by_the_next_service(tmp_path: Path) -> None:
    """A service that stopped with a run's uploads complete (here: one without a worker, as a
    process that died before linking) leaves the run `linking` with its encodings; the next
    service's worker links it at start and deletes them."""
    stopped = LinkageService(open_database(f"sqlite:///{tmp_path / 'linkage.db'}"))
    tokens = {n: stopped.add_member(n, "node").token for n in ("A", "B")}
    boss = stopped.authenticate(stopped.add_member("boss", "admin").token)
    assert boss is not None
    stopped.create_run(boss, CreateRun(run_id="r1", nodes=["A", "B"]))
    for n, p in (("A", "a"), ("B", "b")):
        node = stopped.authenticate(tokens[n])
        assert node is not None
        rows = CHILDREN[CHILDREN.patient_id.str.startswith(p)]
        stopped.upload(node, "r1", Upload(**_upload(rows)))
    assert stopped.pending() == ["r1"]
    with LiveService(tmp_path) as again:
        assert len(again.tables()["linkage_clks"]) in (0, 6)
        assert again.wait_state("r1", "linked") == "linked"
        assert again.tables()["linkage_clks"] == []


@pytest.mark.parametrize("countries", ["DE,PL"])
def test_nodes_show_progress_and_the_run_that_made_their_groups(
    tmp_path: Path, countries: str
) -> None:
    stores, truth = partnership_copy(tmp_path / "nodes", countries)
    lines: dict[str, list[str]] = {cc: [] for cc in stores}
    with LiveService(tmp_path) as svc:
        tokens = {cc: svc.token(cc) for cc in stores}
        _admin_run(svc, list(stores), "first")
        out: dict[str, Any] = {}

        def one(cc: str) -> None:
            with LinkageClient(svc.url, tokens[cc]) as client:
                out[cc] = run(stores[cc], client, "first", 60, progress=lines[cc].append)

        threads = [threading.Thread(target=one, args=(cc,)) for cc in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
    assert set(out) == set(stores)
    for cc, said in lines.items():
        assert said[0].startswith("uploading ") and "encodings" in said[0]
        assert any(x.startswith(("waiting for", "the service is linking")) for x in said), said
        stored = f"link_group now holds the {out[cc]['linked']} linked records of run first"
        assert said[-1] == stored
        status = link_status(stores[cc])
        assert status["run"] == "first" and status["linked"] == out[cc]["linked"]
        assert status["kept"] + status["set_aside"] == status["linked"]
        assert status["last_event"]["event"] == "linkage-linked"
    found, real = found_pairs(link_groups(stores)), true_pairs(truth, stores)
    assert real and len(found & real) >= 0.75 * len(real)
