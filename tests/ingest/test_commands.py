"""`ccdp ingest`, `ccdp quarantine list|export` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

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
