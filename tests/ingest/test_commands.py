"""`ccdp ingest`, `ccdp quarantine list|export` as a user runs them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb

from tests.ingest.registry import clean_registry, edited, store_digest, write_native


def test_ingest_json_reports_totals_and_tables(tmp_path: Path, ccdp) -> None:
    rows = edited(clean_registry(), "tumour", 1, topography="C62.9")
    folder = write_native(tmp_path / "FR", rows)
    store = tmp_path / "node.duckdb"
    out = json.loads(ccdp("ingest", folder, "--store", store, "--json").stdout)
    assert out["rows_read"] == sum(len(v) for v in rows.values())
    assert out["quarantined"] == 5  # the tumour, its event, treatment, biomarker, specimen
    assert out["accepted"] == out["rows_read"] - 5
    assert out["tables"]["tumour"] == {
        "rows_read": 6,
        "accepted": 5,
        "quarantined": 1,
        "flagged": 0,
        "rechecked": 0,
        "requarantined": 0,
    }
    listed = json.loads(ccdp("quarantine", "list", "--store", store, "--json").stdout)
    assert len(listed) == 5
    tumour = next(r for r in listed if r["table"] == "tumour")
    assert tumour["source_file"] == "FR/tumour.csv" and tumour["source_row"] == 2
    assert tumour["key"] == "T001" and tumour["fields"] == ["topography"]
    assert tumour["edit_ids"] == ["tumour.sex_site"]
    assert "FR/tumour.csv row 2: topography 'C62.9'" in tumour["messages"][0]
    human = ccdp("quarantine", "list", "--store", store).stdout
    assert "tumour.sex_site" in human and "T001" in human
    ccdp("quarantine", "export", "--store", store, "--out", tmp_path / "fix")
    text = (tmp_path / "fix" / "tumour.csv").read_text(encoding="utf-8")
    (tmp_path / "fix" / "tumour.csv").write_text(text.replace("C62.9", "C42.1"), encoding="utf-8")
    again = json.loads(ccdp("ingest", tmp_path / "fix", "--store", store, "--json").stdout)
    assert again["quarantined"] == 0 and again["accepted"] == 5
    assert json.loads(ccdp("quarantine", "list", "--store", store, "--json").stdout) == []


def test_corrupt_input_gives_one_clear_line_and_changes_nothing(tmp_path: Path, ccdp) -> None:
    store = tmp_path / "node.duckdb"
    ccdp("ingest", write_native(tmp_path / "a", clean_registry(3)), "--store", store, "--json")
    before = store_digest(store)
    folder = write_native(tmp_path / "b", clean_registry())
    (folder / "event.csv").write_text("event_id,tumour_id,when\n", encoding="utf-8")
    proc = ccdp("ingest", folder, "--store", store, check=False)
    assert proc.returncode == 2
    assert "b/event.csv: unknown column 'when'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    assert store_digest(store) == before


def test_quarantine_list_needs_a_store(tmp_path: Path, ccdp) -> None:
    proc = ccdp("quarantine", "list", "--store", tmp_path / "none.duckdb", check=False)
    assert proc.returncode == 2 and "no node store at" in proc.stderr


def _drop_column(path: Path, column: str, rename_to: str | None = None) -> None:
    """Rewrite a native CSV without `column` (or with it renamed), as a registry would send it."""
    with path.open(encoding="utf-8", newline="") as fh:
        records = list(csv.DictReader(fh))
    fields = list(records[0])
    for r in records:
        value = r.pop(column)
        if rename_to:
            r[rename_to] = value
    fields = [rename_to if f == column else f for f in fields if rename_to or f != column]
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)


def test_absent_optional_columns_are_null_and_reported(tmp_path: Path, ccdp) -> None:
    rows = clean_registry()
    folder = write_native(tmp_path / "FR", rows)
    _drop_column(folder / "event.csv", "bm_blasts_pct")
    _drop_column(folder / "patient.csv", "cause_of_death")
    store = tmp_path / "node.duckdb"
    out = json.loads(ccdp("ingest", folder, "--store", store, "--json").stdout)
    assert out["quarantined"] == 0 and out["accepted"] == sum(len(v) for v in rows.values())
    assert out["absent_columns"] == {"patient": ["cause_of_death"], "event": ["bm_blasts_pct"]}
    con = duckdb.connect(str(store), read_only=True)
    try:
        blasts = con.execute("SELECT count(*), count(bm_blasts_pct) FROM event").fetchall()[0]
        causes = con.execute("SELECT count(cause_of_death) FROM patient").fetchall()[0][0]
    finally:
        con.close()
    assert blasts == (len(rows["event"]), 0) and causes == 0
    human = ccdp("ingest", folder, "--store", store).stdout
    assert "absent columns in event (stored as null): bm_blasts_pct" in human
    assert "absent columns in patient (stored as null): cause_of_death" in human


def test_unknown_column_suggests_the_field_and_required_ones_stay_required(
    tmp_path: Path, ccdp
) -> None:
    folder = write_native(tmp_path / "FR", clean_registry())
    _drop_column(folder / "event.csv", "bm_blasts_pct", rename_to="bm_blast_pct")
    store = tmp_path / "node.duckdb"
    proc = ccdp("ingest", folder, "--store", store, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "FR/event.csv: unknown column 'bm_blast_pct'" in proc.stderr
    assert "did you mean 'bm_blasts_pct'?" in proc.stderr
    folder = write_native(tmp_path / "DE", clean_registry())
    _drop_column(folder / "event.csv", "event_date")
    proc = ccdp("ingest", folder, "--store", store, check=False)
    assert proc.returncode == 2 and "DE/event.csv: missing column(s) 'event_date'" in proc.stderr
    assert not store.exists()


def test_ingest_creates_the_store_folder_and_removes_it_on_failure(tmp_path: Path, ccdp) -> None:
    folder = write_native(tmp_path / "FR", clean_registry(3))
    store = tmp_path / "nodes" / "fr" / "node.duckdb"
    out = json.loads(ccdp("ingest", folder, "--store", store, "--json").stdout)
    assert out["accepted"] == out["rows_read"] > 0 and store.is_file()
    assert "ccdp quarantine list" not in ccdp("ingest", folder, "--store", store).stdout
    # a ragged row: found by DuckDB while reading, after the store was opened
    with (folder / "event.csv").open("a", encoding="utf-8") as fh:
        fh.write("E9,T001,relapse,2015-01-01,cns,3,extra\n")
    failed = tmp_path / "other" / "deep" / "node.duckdb"
    proc = ccdp("ingest", folder, "--store", failed, check=False)
    assert proc.returncode == 2 and "FR/event.csv" in proc.stderr, proc.stderr
    assert not (tmp_path / "other").exists()
