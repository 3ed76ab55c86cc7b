"""A node store read for export: every patient with all of their rows, a batch at a time.

Exports must run over a million-patient store on a modest machine, so the store is never read
whole: patients are numbered once (by key) and each batch reads only its own rows of every table.
Only accepted rows are read: the quarantine and the flags are not part of an export.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from ccdp.model import load_model
from ccdp.store import NodeStore

PATIENT_TABLES = ("patient", "trial_enrolment")
"""Tables keyed by the patient."""

TUMOUR_TABLES = ("tumour", "event", "treatment", "biomarker", "specimen")
"""Tables reached through the tumour (the tumour itself keyed by the patient)."""

BATCH = 20_000
"""Patients per batch: about 100 MB of frames on a synthetic store."""


@dataclass(frozen=True)
class PatientBatch:
    """One batch of patients and every row that belongs to them, table by table."""

    number: int
    patient: pd.DataFrame
    tumour: pd.DataFrame
    event: pd.DataFrame
    treatment: pd.DataFrame
    trial_enrolment: pd.DataFrame
    biomarker: pd.DataFrame
    specimen: pd.DataFrame

    def table(self, name: str) -> pd.DataFrame:
        """The batch's rows of table `name`."""
        frame = getattr(self, name)
        assert isinstance(frame, pd.DataFrame)
        return frame


def count_patients(store: NodeStore) -> int:
    """Patients in the store (the total a progress bar counts towards)."""
    return store.count("patient")


def patient_batches(store: NodeStore, size: int = BATCH) -> Iterator[PatientBatch]:
    """Every patient of `store` with their rows, `size` patients at a time, in key order.

    Rows of a batch are sorted by their own key so that an export is the same file for the
    same store, whatever DuckDB's scan order."""
    con = store.con.cursor()
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _x_patient AS SELECT patient_id, "
            f"(row_number() OVER (ORDER BY patient_id) - 1) // {int(size)} AS b FROM patient"
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _x_tumour AS SELECT t.tumour_id, p.b "
            "FROM tumour t JOIN _x_patient p USING (patient_id)"
        )
        batches = con.execute("SELECT coalesce(max(b) + 1, 0) FROM _x_patient").fetchone()
        for b in range(int(batches[0]) if batches else 0):
            yield PatientBatch(number=b, **{t: _rows(con, t, b) for t in _ALL})
    finally:
        con.execute("DROP TABLE IF EXISTS _x_patient")
        con.execute("DROP TABLE IF EXISTS _x_tumour")
        con.close()


_ALL = PATIENT_TABLES[:1] + TUMOUR_TABLES + PATIENT_TABLES[1:]


def _rows(con: object, table: str, b: int) -> pd.DataFrame:
    """Rows of `table` for batch `b`, sorted by the table's primary key."""
    keys = ", ".join(f"x.{k}" for k in load_model().table(table).primary_key)
    via = "_x_patient" if table in PATIENT_TABLES else "_x_tumour"
    on = "patient_id" if table in PATIENT_TABLES else "tumour_id"
    sql = f"SELECT x.* FROM {table} x JOIN {via} k USING ({on}) WHERE k.b = ? ORDER BY {keys}"
    frame = con.execute(sql, [b]).df()  # type: ignore[attr-defined]
    assert isinstance(frame, pd.DataFrame)
    return frame
