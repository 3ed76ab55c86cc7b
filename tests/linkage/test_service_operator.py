"""The linkage service's operator as the adversary: a service that keeps a copy of every body the
keep rule's `years` route received and of every group list it served, beside its database, its
audit chain and its logs, over two runs of the same registries. What it learns is what
docs/linkage.md says: the years (diagnosis, last contact) of linked records only, per group;
never a name, an id, a stored key or a date; no year of an unlinked record. And what the doc
says of two runs: the pseudonyms are new each run, but a group's registries and years often
single it out again (measured here, and stated in the doc)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from ccdp.federation.hub.context import Principal
from ccdp.federation.linkage.protocol import Years
from ccdp.federation.linkage.service import LinkageService
from tests.linkage.linkwire_kit import LiveService, partnership_copy, run_nodes


class KeepingService(LinkageService):
    """The service as a curious operator runs it: every years body and group list kept."""

    received: list[tuple[str, str, str, int | None, int | None]]
    served: dict[tuple[str, str, str], str]

    def years(self, node: Principal, run_id: str, body: Years) -> dict[str, Any]:
        self.received += [(run_id, node.name, r.p, r.year, r.last) for r in body.records]
        return super().years(node, run_id, body)

    def groups(self, node: Principal, run_id: str) -> dict[str, Any]:
        out = super().groups(node, run_id)
        self.served |= {(run_id, node.name, r["p"]): r["group"] for r in out["records"]}
        return out


def _store_years(store: Path, linked_only: bool) -> Counter[tuple[int | None, int | None]]:
    """The (earliest diagnosis year, last-contact year) of the store's linked patients (or of
    all its patients), as the node computes them, read here with DuckDB."""
    where = "WHERE p.patient_id IN (SELECT patient_id FROM link_group)" if linked_only else ""
    con = duckdb.connect(str(store), read_only=True)
    try:
        rows = con.execute(
            "SELECT min(year(t.diagnosis_date)), max(year(p.last_contact_date)) FROM patient p "
            f"LEFT JOIN tumour t USING (patient_id) {where} GROUP BY p.patient_id"
        ).fetchall()
    finally:
        con.close()
    return Counter((a, b) for a, b in rows)


def _secrets_of(stores: dict[str, Path], folder: Path) -> tuple[list[str], list[str]]:
    """What identifies a child: names, national ids, site ids, stored keys; and every full date
    of the registries (birth, diagnosis, last contact, death)."""
    words: list[str] = []
    dates: set[str] = set()
    for cc, store in stores.items():
        ids = pd.read_csv(folder / "synth" / cc / "identifiers.csv", dtype=str)
        words += ids["patient_id"].tolist() + ids["national_id"].dropna().tolist()
        words += [
            n for col in ("given_name", "family_name") for n in ids[col].dropna() if len(n) >= 6
        ]
        dates |= set(ids["birth_date"].dropna())
        con = duckdb.connect(str(store), read_only=True)
        try:
            words += [r[0] for r in con.execute("SELECT patient_id FROM patient").fetchall()]
            for sql in (
                "SELECT CAST(diagnosis_date AS VARCHAR) FROM tumour",
                "SELECT CAST(last_contact_date AS VARCHAR) FROM patient",
                "SELECT CAST(death_date AS VARCHAR) FROM patient",
            ):
                dates |= {r[0] for r in con.execute(sql).fetchall() if r[0]}
        finally:
            con.close()
    # the service's own timestamps carry today's date: a child's date equal to it proves nothing
    today = datetime.now(UTC).date()
    dates -= {str(today), str(today - timedelta(days=1))}
    return words, sorted(dates)


def test_what_the_operator_learns(tmp_path: Path) -> None:
    stores, _truth = partnership_copy(tmp_path / "nodes")
    handler = _Capture()
    loggers = [logging.getLogger(n) for n in ("ccdp", "uvicorn", "uvicorn.error", "fastapi")]
    for lg in loggers:
        lg.addHandler(handler)
    linked_years: dict[tuple[str, str], Counter[tuple[int | None, int | None]]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    try:
        with LiveService(tmp_path, service_class=KeepingService) as svc:
            op = svc.service
            assert isinstance(op, KeepingService)
            op.received, op.served = [], {}
            tokens = {cc: svc.token(cc) for cc in stores}
            admin = svc.token("boss", "admin")
            for run_id in ("r1", "r2"):
                with svc.http(admin) as boss:
                    body = {"run_id": run_id, "nodes": list(stores), "threshold": 0.8}
                    assert boss.post("/api/admin/runs", json=body).is_success
                out = run_nodes(svc.url, stores, tokens, run_id)
                assert all(isinstance(v, dict) for v in out.values()), out
                summaries[run_id] = out
                for cc, store in stores.items():
                    linked_years[(run_id, cc)] = _store_years(store, linked_only=True)
            tables = svc.tables()
            with svc.http(admin) as boss:
                audit = boss.get("/api/admin/audit").json()["records"]
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    received, served = op.received, op.served

    # 1. years of linked records only: per node and run, exactly its linked records' years
    for run_id, out in summaries.items():
        for cc in stores:
            got = [(y, last) for r, n, _p, y, last in received if (r, n) == (run_id, cc)]
            assert len(got) == out[cc]["linked"] < out[cc]["records"]
            assert Counter(got) == linked_years[(run_id, cc)]
            assert Counter(got) != _store_years(stores[cc], linked_only=False)
            sent = {p for r, n, p, _y, _l in received if (r, n) == (run_id, cc)}
            assert sent == {p for (r, n, p) in served if (r, n) == (run_id, cc)}
    # 2. never a name, an id, a stored key or a full date: in the database, the audit chain,
    #    the logs, or the bodies it kept
    everything = "\n".join(
        [
            json.dumps([[str(v) for v in row] for rows in tables.values() for row in rows]),
            json.dumps(audit, default=str),
            handler.text(),
            json.dumps(received),
            json.dumps([[*k, v] for k, v in served.items()]),
        ]
    )
    words, dates = _secrets_of(stores, tmp_path / "nodes")
    assert words and dates
    assert [w for w in words if w in everything] == []
    assert [d for d in dates if d in everything] == []
    # after the runs its database holds no pseudonym, group or year: only counts and audit
    assert tables["linkage_results"] == [] and tables["linkage_clks"] == []
    # 3. two runs: new pseudonyms each run, yet a group's registries and years single many
    #    groups out again (the doc states it)
    pseudonyms = {r: {p for (rr, _n, p) in served if rr == r} for r in ("r1", "r2")}
    assert not pseudonyms["r1"] & pseudonyms["r2"]
    again, groups = _followed(received, served)
    print(f"groups a run-1 signature singles out again in run 2: {again} of {groups}")
    assert 0 < again <= groups


def _followed(
    received: list[tuple[str, str, str, int | None, int | None]],
    served: dict[tuple[str, str, str], str],
) -> tuple[int, int]:
    """How many run-1 groups the operator finds again in run 2 by their signature (the sorted
    registries with their two years), unique in both runs; and how many run-1 groups."""
    sig: dict[str, dict[str, list[tuple[str, int | None, int | None]]]] = {"r1": {}, "r2": {}}
    for run_id, node, p, year, last in received:
        group = served[(run_id, node, p)]
        sig[run_id].setdefault(group, []).append((node, year, last))
    counts = {r: Counter(tuple(sorted(v, key=str)) for v in g.values()) for r, g in sig.items()}
    again = sum(1 for s, k in counts["r1"].items() if k == 1 and counts["r2"].get(s) == 1)
    return again, len(sig["r1"])


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)
