"""Registries linked end to end over real HTTP on loopback: synthetic registries with identifiers
ingested into real DuckDB stores (encodings made at ingest), a real linkage service, each node's
`run` in its own thread; the link groups written to each store are checked against truth.json's
cross-border pairs, the keep rule against the stores' own diagnosis years, and the service's
database and every log read back for anything that could identify a child."""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from ccdp.federation.linkage.client import LinkageClient, LinkageRequestError
from ccdp.federation.linkage.node import run
from ccdp.federation.node.audit import AuditLog, audit_path
from ccdp.linkage import CHILD_THRESHOLD
from ccdp.store.config import load_node_config
from tests.linkage.linkwire_kit import (
    LiveService,
    core_pairs,
    found_pairs,
    link_groups,
    registries,
    stored_clks,
    timed,
    true_pairs,
)

PRECISION_FLOOR = 0.9
RECALL_FLOOR = 0.75  # at LOW_THRESHOLD; 8 true pairs in this draw, most with a typo or swap
LOW_THRESHOLD = 0.75


@pytest.fixture(scope="module")
def partnership(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Any, Path]:
    folder = tmp_path_factory.mktemp("partnership")
    (stores, truth), seconds = timed(registries, folder, "DE,FR,PL", 3000)
    print(f"synth + ingest of 3 registries (3,000 children): {seconds:.1f} s")
    return stores, truth, folder


def _run_all(
    svc: LiveService, stores: dict[str, Path], tokens: dict[str, str], run_id: str
) -> dict[str, Any]:
    """Every node's `ccdp linkage run` at once, each in its own thread and HTTP client."""
    out: dict[str, Any] = {}

    def one(cc: str) -> None:
        with LinkageClient(svc.url, tokens[cc]) as client:
            try:
                out[cc] = run(stores[cc], client, run_id, timeout=60)
            except Exception as exc:  # reported by the assertion below
                out[cc] = exc

    threads = [threading.Thread(target=one, args=(cc,)) for cc in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(isinstance(v, dict) for v in out.values()), out
    return out


def _years(stores: dict[str, Path]) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    """Each stored patient's earliest diagnosis year and last-contact year, read from its store
    with pandas (the reference)."""
    out: dict[tuple[str, str], tuple[int | None, int | None]] = {}
    for cc, store in stores.items():
        con = duckdb.connect(str(store), read_only=True)
        try:
            tumours = con.execute("SELECT patient_id, diagnosis_date FROM tumour").df()
            patients = con.execute("SELECT patient_id, last_contact_date FROM patient").df()
            first = pd.to_datetime(tumours.diagnosis_date).dt.year.groupby(tumours.patient_id).min()
            last = pd.to_datetime(patients.last_contact_date).dt.year
            for pid, lc in zip(patients.patient_id, last, strict=True):
                dx = first.get(pid)
                out[(cc, pid)] = (
                    None if dx is None or pd.isna(dx) else int(dx),
                    None if pd.isna(lc) else int(lc),
                )
        finally:
            con.close()
    return out


def _check_groups(
    stores: dict[str, Path], truth: Any, folder: Path, threshold: float, recall_floor: float
) -> tuple[float, float]:
    """The groups the nodes stored: exactly the core's own pairs on the same identifiers (run
    in this process), precision and recall against truth.json above the floors, and in each
    group one kept copy, the earliest diagnosis."""
    groups = link_groups(stores)
    truth_pairs = true_pairs(truth, stores)
    found = found_pairs(groups)
    assert found == core_pairs(folder, stores, threshold)
    hits = len(found & truth_pairs)
    precision = hits / len(found) if found else 0.0
    recall = hits / len(truth_pairs)
    print(
        f"{len(truth_pairs)} true pairs, {len(found)} found, {hits} right: "
        f"precision {precision:.3f} recall {recall:.3f}"
    )
    assert precision >= PRECISION_FLOOR and recall >= recall_floor
    years = _years(stores)
    for gid, members in groups.items():
        assert len(members) >= 2 and len({c for c, _, _ in members}) == len(members), gid
        assert sum(keep for _, _, keep in members) == 1, f"group {gid}: not exactly one kept"
        kept = next((c, p) for c, p, keep in members if keep)
        # the keep rule: the earliest diagnosis year; among those, the latest last contact
        known = [years[(c, p)][0] for c, p, _ in members if years[(c, p)][0] is not None]
        assert years[kept][0] == min(known), f"group {gid}: kept copy is not the earliest diagnosis"
        lasts = [years[(c, p)][1] for c, p, _ in members if years[(c, p)][0] == min(known)]
        if any(x is not None for x in lasts):
            latest = max(x for x in lasts if x is not None)
            assert years[kept][1] == latest, f"group {gid}: a copy followed longer was set aside"
    return precision, recall


def test_three_registries_linked_and_nothing_left_at_the_service(
    partnership: tuple[dict[str, Path], Any, Path], tmp_path: Path
) -> None:
    stores, truth, folder = partnership
    with LiveService(tmp_path) as svc:
        tokens = {cc: svc.token(cc) for cc in stores}
        admin = svc.token("boss", "admin")
        with LinkageClient(svc.url, admin) as boss:
            boss.create_run("r3", list(stores), LOW_THRESHOLD)
        out, seconds = timed(_run_all, svc, stores, tokens, "r3")
        print(f"run over 3 registries: {seconds:.2f} s; {out}")
        precision, recall = _check_groups(stores, truth, folder, LOW_THRESHOLD, RECALL_FLOOR)
        with svc.http(admin) as http:
            status = http.get("/api/admin/runs/r3").json()
            audit = http.get("/api/admin/audit").json()
        assert status["state"] == "done"
        assert audit["verified"]["ok"] is True
        actions = [r["action"] for r in audit["records"]]
        for step in ("linkage-run-created", "linkage-upload", "linkage-linked", "linkage-done"):
            assert step in actions
        tables = svc.tables()
    # the service's database read back: no encoding, no result, nothing identifying
    assert tables["linkage_clks"] == [] and tables["linkage_results"] == []
    clks = stored_clks(stores)
    _assert_nothing_identifying(stores, tables, clks, truth)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("linkage.db"))
    assert not [c for c in clks[:2000] if c in raw], "an encoding's bytes remain in the db file"
    # each node's audit log records the run, and holds no key, name or encoding
    for cc, store in stores.items():
        records = AuditLog.for_store(store).records()
        events = [r.get("event") for r in records]
        assert "linkage-upload" in events and "linkage-linked" in events, cc
        # years left the node for its linked records only; the run's key is forgotten
        sent = next(r for r in records if r.get("event") == "linkage-years")
        assert sent["records"] == out[cc]["linked"] < out[cc]["records"]
        assert not load_node_config(store).get("linkage_run_keys")
        AuditLog.for_store(store).verify()
        text = audit_path(store).read_text()
        _assert_text_clean(text, stores, truth, clks)
    assert precision >= PRECISION_FLOOR and recall >= RECALL_FLOOR


def _identifying_strings(stores: dict[str, Path], truth: Any) -> list[str]:
    """Stored keys, the sites' patient ids, family names and national ids of every registry."""
    out: list[str] = []
    for cc, store in stores.items():
        con = duckdb.connect(str(store), read_only=True)
        try:
            out += [r[0] for r in con.execute("SELECT patient_id FROM linkage_encoding").fetchall()]
        finally:
            con.close()
        ids = pd.read_csv(store.parent / "synth" / cc / "identifiers.csv", dtype=str)
        out += ids["patient_id"].tolist()
        out += [n for n in ids["family_name"].dropna() if len(n) >= 6]
        out += ids["national_id"].dropna().tolist()
    return out


def _assert_text_clean(text: str, stores: dict[str, Path], truth: Any, clks: list[bytes]) -> None:
    for s in _identifying_strings(stores, truth):
        assert s not in text, f"{s!r} found"
    for c in clks[:500]:
        assert base64.b64encode(c).decode() not in text


def _assert_nothing_identifying(
    stores: dict[str, Path], tables: dict[str, list[tuple[Any, ...]]], clks: list[bytes], truth: Any
) -> None:
    cells = [v for rows in tables.values() for row in rows for v in row]
    blobs = {bytes(v) for v in cells if isinstance(v, bytes | memoryview)}
    assert not blobs & set(clks)
    text = "\n".join(str(v) for v in cells if isinstance(v, str))
    _assert_text_clean(text, stores, truth, clks)


def test_two_registries_then_a_node_outside_the_run_is_refused(
    partnership: tuple[dict[str, Path], Any, Path], tmp_path: Path
) -> None:
    stores, truth, folder = partnership
    two = {cc: stores[cc] for cc in ("PL", "DE")}
    with LiveService(tmp_path) as svc:
        tokens = {cc: svc.token(cc) for cc in stores}
        with LinkageClient(svc.url, svc.token("boss", "admin")) as boss:
            boss.create_run("r2", list(two))
        with LinkageClient(svc.url, tokens["FR"]) as fr, pytest.raises(LinkageRequestError) as err:
            run(stores["FR"], fr, "r2", timeout=5)
        assert err.value.status == 403 and "not in run" in str(err.value)
        assert "r2" not in (load_node_config(stores["FR"]).get("linkage_run_keys") or {})
        _run_all(svc, two, tokens, "r2")
    _check_groups(two, truth, folder, CHILD_THRESHOLD, 0.5)  # the default threshold
    # the two-registry run replaced the three-registry groups of PL and DE (one run at a time)
    runs = set()
    for store in two.values():
        con = duckdb.connect(str(store), read_only=True)
        runs |= {r[0] for r in con.execute("SELECT DISTINCT run_id FROM link_group").fetchall()}
        con.close()
    assert runs <= {"r2"}
