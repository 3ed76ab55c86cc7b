"""A small, clean native-layout registry for tests, and helpers to corrupt and compare stores."""

from __future__ import annotations

import copy
import csv
import hashlib
from pathlib import Path

import duckdb

from ccdp.model import load_model

Rows = dict[str, list[dict[str, str]]]


def clean_registry(n: int = 6) -> Rows:
    """n children with one leukaemia each, their course, treatment, trial, markers, samples."""
    t: Rows = {k: [] for k in load_model().table_names}
    for i in range(n):
        dead = i % 5 == 4
        t["patient"].append(
            {
                "patient_id": f"P{i:03d}",
                "sex": "male" if i % 2 == 0 else "female",
                "birth_date": "2005-01" if i == 1 else f"2005-01-{i % 28 + 1:02d}",
                "country": "FR",
                "vital_status": "dead" if dead else "alive",
                "last_contact_date": "2018-03-01" if dead else "2020-06-30",
                "death_date": "2018-03-01" if dead else "",
                "cause_of_death": "cancer" if dead else "",
                "consent": "DUO:0000042",
            }
        )
        t["tumour"].append(
            {
                "tumour_id": f"T{i:03d}",
                "patient_id": f"P{i:03d}",
                "diagnosis_date": "2010-02-01",
                "topography": "C42.1",
                "morphology": "9836",
                "behaviour": "3",
                "basis_of_diagnosis": "7",
                "laterality": "not_paired",
                "immunophenotype": "b_precursor",
                "wbc_at_diagnosis": "10.5",
                "cns_status": "CNS1",
                "stage_system": "toronto_tier2",
                "stage": "CNS1",
                "risk_group": "standard",
                "frontline_end_date": "2012-08-01",
            }
        )
        t["event"].append(
            {
                "event_id": f"E{i:03d}a",
                "tumour_id": f"T{i:03d}",
                "event_type": "remission",
                "event_date": "2010-03-15",
                "relapse_site": "",
                "bm_blasts_pct": "2",
            }
        )
        if dead:
            t["event"].append(
                {
                    "event_id": f"E{i:03d}b",
                    "tumour_id": f"T{i:03d}",
                    "event_type": "death",
                    "event_date": "2018-03-01",
                    "relapse_site": "",
                    "bm_blasts_pct": "",
                }
            )
        t["treatment"].append(
            {
                "treatment_id": f"X{i:03d}",
                "tumour_id": f"T{i:03d}",
                "type": "chemotherapy",
                "agent": "vincristine",
                "protocol": "AIEOP-BFM ALL 2017",
                "start_date": "2010-02-05",
                "end_date": "2012-08-01",
            }
        )
        if i % 2 == 0:
            t["trial_enrolment"].append(
                {
                    "patient_id": f"P{i:03d}",
                    "trial": "ALLTogether1",
                    "arm": "A",
                    "enrolment_date": "2010-02-10",
                    "risk_group": "standard",
                }
            )
        t["biomarker"].append(
            {
                "tumour_id": f"T{i:03d}",
                "marker": "ETV6-RUNX1",
                "value": "positive",
                "unit": "",
                "date": "2010-02-02",
            }
        )
        t["specimen"].append(
            {
                "specimen_id": f"S{i:03d}",
                "tumour_id": f"T{i:03d}",
                "type": "bone_marrow",
                "collection_date": "2010-02-02",
                "available": "true",
            }
        )
    for sex in ("male", "female"):
        for age_group, pop in (("0", "350000.0"), ("1-4", "1400000")):
            t["population"].append(
                {
                    "country": "FR",
                    "year": "2010",
                    "sex": sex,
                    "age_group": age_group,
                    "population": pop,
                }
            )
    return t


def edited(rows: Rows, table: str, index: int, **changes: str) -> Rows:
    """A copy of `rows` with some cells of one row changed."""
    out = copy.deepcopy(rows)
    out[table][index].update(changes)
    return out


def write_native(folder: Path, rows: Rows) -> Path:
    """Write non-empty tables as <table>.csv with every input field as a column."""
    folder.mkdir(parents=True, exist_ok=True)
    for table, records in rows.items():
        if not records:
            continue
        fields = [f.name for f in load_model().table(table).input_fields]
        with (folder / f"{table}.csv").open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(records)
    return folder


def store_digest(store: Path) -> dict[str, str]:
    """A hash of every table's content (rows in a canonical order), to prove nothing changed."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {
            name: hashlib.sha256(
                repr(con.execute(f'SELECT * FROM "{name}" ORDER BY ALL').fetchall()).encode()
            ).hexdigest()
            for name in sorted(names)
        }
    finally:
        con.close()
