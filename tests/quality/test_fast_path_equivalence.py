"""The faster edit run stores exactly what the one-statement run stored before it.

`ReferenceEditRun` is the engine as it was before the speed work (every row check in one joined
statement; duplicate keys found by a subquery repeated in each statement), kept here as the
reference. A synthetic native export with defects of every kind (identical and conflicting
duplicate keys, bad codes and values, control characters, impossible dates, orphans, children
of quarantined parents) is ingested by both, twice (the second time over a store that holds the
parents, with changed rows), and every table of both stores must hold the same rows.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ccdp.ingest import pipeline, recheck
from ccdp.ingest.pipeline import ingest_native
from ccdp.quality import engine
from ccdp.quality.edits import edits_by_check
from ccdp.quality.engine import EditRun, _conflicts_sql, key_expr
from ccdp.store.typed import q, raw_column
from ccdp.synth.generate import generate

# columns that differ between two runs by construction (ids and times of the run)
RUN_COLUMNS = {"_ingest_id", "ingest_id", "quarantined_at", "resolved_at", "resolved_by"}
TABLES = (
    "patient",
    "tumour",
    "event",
    "treatment",
    "trial_enrolment",
    "biomarker",
    "specimen",
    "population",
    "quarantine",
    "quality_flag",
)


class ReferenceEditRun(EditRun):
    """The edit run before the speed work: the behaviour the fast path must keep."""

    def _run_checks(
        self, tdef: engine.TableDef, work: str, checks: list[engine.Check], joins: list[str]
    ) -> None:
        self._run_group(tdef, work, checks, joins)  # all checks, all joins, one statement

    def _duplicates(self, tdef: engine.TableDef, work: str) -> None:
        edit, conflict = edits_by_check("duplicate_key")[:2]
        cols = [q(raw_column(tdef.field(k))) for k in tdef.primary_key]
        keys = ", ".join(cols)
        on = " AND ".join(f"w.{c} IS NOT DISTINCT FROM d.{c}" for c in cols)
        dups = (
            f"(SELECT w.* FROM {q(work)} w SEMI JOIN (SELECT {keys} FROM {q(work)} GROUP BY ALL "
            f"HAVING count(*) > 1) d ON {on})"
        )
        ranked = (
            f"(SELECT w.*, d._conflict, row_number() OVER win AS _rank, first_value("
            f"w._source_file) OVER win AS _f1, first_value(w._source_row) OVER win AS _r1 FROM "
            f"{dups} w JOIN (SELECT {keys}, {_conflicts_sql(tdef)} AS _conflict FROM {dups} "
            f"GROUP BY ALL) d ON {on} "
            f"WINDOW win AS (PARTITION BY {', '.join('w.' + c for c in cols)} ORDER BY w._row)"
            ") AS r"
        )
        text = (
            "CASE WHEN r._conflict <> '' THEN concat('duplicate key with conflicting values (', "
            "r._conflict, '); every row with this key is quarantined') ELSE "
            "concat('duplicates the key of ', r._f1, ' row ', CAST(r._r1 AS VARCHAR)) END"
        )
        shown = "/".join(tdef.primary_key)
        self._insert(tdef.name, edit, shown, key_expr(tdef), text, ranked, "r._rank > 1")
        self._insert(
            tdef.name,
            conflict,
            shown,
            key_expr(tdef),
            text,
            ranked,
            "r._rank = 1 AND r._conflict <> ''",
        )


def _read(folder: Path, table: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False)


def _write(folder: Path, table: str, frame: pd.DataFrame) -> None:
    frame.to_csv(folder / f"{table}.csv", index=False)


def _defects(folder: Path) -> None:
    """Rows failing (or warning on) every kind of edit, beside many clean rows."""
    p = _read(folder, "patient")
    conflicting = p.iloc[[3]].assign(sex="female" if p.at[3, "sex"] == "male" else "male")
    p.loc[5, "sex"] = "x"
    p.loc[6, "birth_date"] = "2012-02-31"
    p.loc[7, "patient_id"] = "P\x01bad"
    p.loc[8, ["vital_status", "death_date"]] = ["dead", "1980-01-01"]
    p.loc[9, "birth_date"] = "2010-03"
    p.loc[10, "vital_status"] = "dead"
    p.loc[11, "last_contact_date"] = "2999-01-01"
    _write(folder, "patient", pd.concat([p, p.iloc[[2]], conflicting], ignore_index=True))
    t = _read(folder, "tumour")
    t.loc[0, "patient_id"] = "FR-NOBODY"
    t.loc[1, "behaviour"] = "7"
    t.loc[2, "morphology"] = "1234"
    t.loc[4, "wbc_at_diagnosis"] = "many"
    t.loc[12, "diagnosis_date"] = "1890-01-01"
    t.loc[13, "topography"] = "C99.9"
    t.loc[14, "basis_of_diagnosis"] = " 5 "
    _write(folder, "tumour", pd.concat([t, t.iloc[[20]]], ignore_index=True))
    x = _read(folder, "treatment")
    x.loc[0, "start_date"] = "1900-01-02"
    x.loc[1, "tumour_id"] = ""
    bad = x.iloc[[2]].assign(agent="other drug")
    _write(folder, "treatment", pd.concat([x, bad], ignore_index=True))
    s = _read(folder, "specimen")
    s.loc[0, "tumour_id"] = "FR-NOTUMOUR"
    s.loc[1, "available"] = "maybe"
    _write(folder, "specimen", s)


def _changed(folder: Path, out: Path) -> Path:
    """A second delivery: some patients' birth dates moved, one tumour fixed, one broken."""
    out.mkdir()
    p = _read(folder, "patient")
    p.loc[20:30, "birth_date"] = "2019-06-01"
    p.loc[5, "sex"] = "male"
    _write(out, "patient", p)
    t = _read(folder, "tumour")
    t.loc[1, "behaviour"] = "3"
    t.loc[40, "topography"] = "bad"
    _write(out, "tumour", t)
    return out


def _contents(store: Path) -> dict[str, list[tuple[object, ...]]]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        out = {}
        for table in TABLES:
            names = [d[0] for d in con.execute(f"SELECT * FROM {table} LIMIT 0").description]
            cols = ", ".join(q(c) for c in names if c not in RUN_COLUMNS)
            rows = con.execute(f"SELECT {cols} FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


def _ingest_twice(store: Path, first: Path, second: Path) -> dict[str, list[tuple[object, ...]]]:
    ingest_native(store, first, progress=False)
    ingest_native(store, second, progress=False)
    return _contents(store)


def test_fast_edit_run_stores_what_the_reference_run_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate(tmp_path / "synth", "FR", patients=400, seed=3)
    first = tmp_path / "synth" / "FR"
    _defects(first)
    second = _changed(first, tmp_path / "second")
    fast = _ingest_twice(tmp_path / "fast.duckdb", first, second)
    monkeypatch.setattr(pipeline, "EditRun", ReferenceEditRun)
    monkeypatch.setattr(recheck, "EditRun", ReferenceEditRun)
    reference = _ingest_twice(tmp_path / "reference.duckdb", first, second)
    assert fast == reference
    # the defects did reach the edits: rows of every kind are quarantined and flagged
    reasons = " ".join(str(r) for r in fast["quarantine"])
    for edit_id in ("key.duplicate", "key.conflict", "allowed", "type", "orphan", "code"):
        assert edit_id in reasons, edit_id
    assert fast["quality_flag"]
