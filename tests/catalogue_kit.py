"""Node stores for catalogue tests: a registry with known small groups, and one more child
ingested later (its rows and an ingest_log entry, in one transaction, as an ingest writes)."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from ccdp.store.migrations import SYSTEM_TABLES
from tests.storekit import build_store, random_registry


def registry(n: int = 200, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """A random registry plus: 3 tumours of group XII (a small cell), one child alone in
    1999 (the earliest year), 12 specimens (csf: 2, dna: 10) and a 7-row biomarker table."""
    reg = random_registry(seed, n, "FR", "a")
    for i in range(3):
        reg["tumour"][i]["iccc_group"] = "XII"
    reg["tumour"][3]["diagnosis_date"] = date(1999, 6, 1)
    reg["patient"][3]["birth_date"] = date(1995, 1, 1)
    reg["patient"][3]["last_contact_date"] = date(2001, 1, 1)
    reg["specimen"] = [
        {"specimen_id": f"S{i}", "tumour_id": f"aT{i}", "type": "csf" if i < 2 else "dna"}
        for i in range(12)
    ]
    reg["biomarker"] = [
        {"tumour_id": f"aT{i}", "marker": "MRD", "value": "0.01", "date": date(2010, 1, 1)}
        for i in range(7)
    ]
    return reg


def make_store(path: Path, n: int = 200, seed: int = 7) -> Path:
    store = build_store(path, registry(n, seed))
    con = duckdb.connect(str(store))
    try:
        con.execute(SYSTEM_TABLES["ingest_log"])
        con.execute(
            "INSERT INTO ingest_log (ingest_id, source, started_at, finished_at) "
            "VALUES ('first', 'site.csv', ?, ?)",
            [datetime(2026, 1, 1, 9), datetime(2026, 1, 1, 10)],
        )
    finally:
        con.close()
    return store


def ingest_child(
    store: Path,
    pid: str = "NEW1",
    iccc_group: str = "II",
    sex: str = "female",
    age_days: int = 3 * 365,
    diagnosed: date = date(2012, 3, 4),
    when: datetime | None = None,
) -> None:
    """One more child (patient and tumour rows) and its ingest_log entry."""
    when = when or datetime.now()
    for attempt in range(50):  # a node agent in this process may be reading the store
        try:
            con = duckdb.connect(str(store))
            break
        except duckdb.Error:
            if attempt == 49:
                raise
            time.sleep(0.05)
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "INSERT INTO patient (patient_id, sex, birth_date, country, vital_status, "
            "last_contact_date) VALUES (?, ?, ?, 'FR', 'alive', ?)",
            [pid, sex, diagnosed - timedelta(days=age_days), diagnosed + timedelta(days=400)],
        )
        con.execute(
            "INSERT INTO tumour (tumour_id, patient_id, diagnosis_date, topography, morphology, "
            "behaviour, iccc_group) VALUES (?, ?, ?, 'C42.1', '9836', 3, ?)",
            [f"T{pid}", pid, diagnosed, iccc_group],
        )
        con.execute(
            "INSERT INTO ingest_log (ingest_id, source, started_at, finished_at) "
            "VALUES (?, 'site.csv', ?, ?)",
            [f"ingest-{pid}", when, when],
        )
        con.execute("COMMIT")
    finally:
        con.close()
