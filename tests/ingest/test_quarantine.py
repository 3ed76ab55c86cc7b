"""The quarantine as the data manager sees it: open entries, resolved ones, and the export."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

import pytest

from ccdp.ingest.pipeline import ingest_native
from ccdp.ingest.quarantine import (
    QuarantineError,
    export_quarantine,
    quarantine_counts,
    quarantine_rows,
)
from ccdp.quality.report import quality_summary
from tests.ingest.registry import clean_registry, edited, write_native

TODAY = date(2024, 1, 1)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_a_later_ingest_accepts_are_resolved_not_lost(tmp_path: Path) -> None:
    rows = edited(clean_registry(), "tumour", 1, topography="C62.9")  # sex/site error + 4 children
    store = tmp_path / "node.duckdb"
    first = ingest_native(store, write_native(tmp_path / "site", rows), progress=False, today=TODAY)
    assert first.quarantined == 5
    assert quarantine_counts(store) == {"open": 5, "resolved": 0}

    fixed = edited(rows, "tumour", 1, topography="C42.1")
    again = ingest_native(store, write_native(tmp_path / "v2", fixed), progress=False, today=TODAY)
    assert again.quarantined == 0
    assert quarantine_counts(store) == {"open": 0, "resolved": 5}
    assert quarantine_rows(store) == []  # open ones by default
    resolved = quarantine_rows(store, status="resolved")
    assert {(r["table"], r["key"]) for r in resolved} == {
        ("tumour", "T001"),
        ("event", "E001a"),
        ("treatment", "X001"),
        ("biomarker", "T001|ETV6-RUNX1|2010-02-02"),
        ("specimen", "S001"),
    }
    assert {r["resolved_by"] for r in resolved} == {again.ingest_id}
    assert all(r["resolved_at"] and r["ingest_id"] == first.ingest_id for r in resolved)
    # the history stays, but counts elsewhere are of open entries only
    assert quality_summary(store).tables["tumour"].quarantined == 0
    assert export_quarantine(store, tmp_path / "fix") == {}


def test_a_row_failing_again_replaces_its_open_entry_and_keeps_the_resolved_one(
    tmp_path: Path,
) -> None:
    bad = edited(clean_registry(), "patient", 0, sex="?")
    store = tmp_path / "node.duckdb"
    site = write_native(tmp_path / "site", bad)
    ingest_native(store, site, progress=False, today=TODAY)
    second = ingest_native(store, site, progress=False, today=TODAY)  # the same faults again
    assert quarantine_counts(store, "patient") == {"open": 1, "resolved": 0}
    good = write_native(tmp_path / "good", clean_registry())
    fix = ingest_native(store, good, progress=False, today=TODAY)
    bad_again = ingest_native(store, site, progress=False, today=TODAY)
    assert quarantine_counts(store, "patient") == {"open": 1, "resolved": 1}
    entries = quarantine_rows(store, "patient", status="all")
    assert sorted((e["ingest_id"], e["resolved_by"] or "") for e in entries) == sorted(
        [(bad_again.ingest_id, ""), (second.ingest_id, fix.ingest_id)]
    )


def test_resolution_is_rolled_back_with_a_failed_ingest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ccdp.ingest import pipeline

    store = tmp_path / "node.duckdb"
    bad = edited(clean_registry(), "patient", 0, sex="?")
    ingest_native(store, write_native(tmp_path / "site", bad), progress=False, today=TODAY)

    def fail(*_args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "_log", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_native(store, write_native(tmp_path / "good", clean_registry()), progress=False)
    assert quarantine_counts(store)["resolved"] == 0 and quarantine_counts(store)["open"] > 0


def test_unknown_status_or_table_is_named(tmp_path: Path) -> None:
    store = tmp_path / "node.duckdb"
    ingest_native(store, write_native(tmp_path / "site", clean_registry()), progress=False)
    with pytest.raises(QuarantineError, match=r"status 'resolve' \(did you mean 'resolved'\?\)"):
        quarantine_rows(store, status="resolve")  # type: ignore[arg-type]
    with pytest.raises(QuarantineError, match=r"table 'tumor' \(did you mean 'tumour'\?\)"):
        quarantine_counts(store, "tumor")


def test_cli_lists_open_entries_with_counts_and_resolved_on_request(tmp_path: Path, ccdp) -> None:
    store = tmp_path / "node.duckdb"
    bad = edited(clean_registry(), "tumour", 1, topography="C62.9")
    ccdp("ingest", write_native(tmp_path / "site", bad), "--store", store, "--json")
    ccdp("ingest", write_native(tmp_path / "good", clean_registry()), "--store", store, "--json")
    human = ccdp("quarantine", "list", "--store", store).stdout
    assert human.startswith("0 open, 5 resolved quarantine entries")
    assert "T001" not in human and "--resolved" in human
    shown = ccdp("quarantine", "list", "--store", store, "--resolved").stdout
    assert "T001" in shown and "resolved by ingest" in shown
    listed = json.loads(ccdp("quarantine", "list", "--store", store, "--all", "--json").stdout)
    assert len(listed) == 5 and all(r["resolved_by"] for r in listed)
    both = ccdp("quarantine", "list", "--store", store, "--all", "--resolved", check=False)
    assert both.returncode == 2 and "not both" in both.stderr
