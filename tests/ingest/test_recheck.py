"""Stored children are checked again when an ingest changes their parent (ingest/recheck.py)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ccdp.ingest import pipeline
from ccdp.ingest.errors import IngestError
from ccdp.ingest.pipeline import IngestReport, ingest_native
from ccdp.store import NodeStore
from tests.ingest.registry import Rows, clean_registry, edited, store_digest, write_native

TODAY = date(2024, 1, 15)
BELOW_PATIENT = ("tumour", "event", "treatment", "trial_enrolment", "biomarker", "specimen")


def ingest(store: Path, folder: Path, rows: Rows) -> IngestReport:
    report = ingest_native(store, write_native(folder, rows), progress=False, today=TODAY)
    assert report.rows_read == report.accepted + report.quarantined
    for t in report.tables.values():
        assert t.rows_read == t.accepted + t.quarantined
        assert t.requarantined <= t.rechecked
    return report


def stored(store: Path, table: str) -> pd.DataFrame:
    with NodeStore(store, read_only=True) as s:
        return s.read(table)


def flags(store: Path) -> list[tuple[str, str, str]]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        sql = "SELECT table_name, record_key, edit_id FROM quality_flag ORDER BY ALL"
        return [tuple(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def rechecked(report: IngestReport) -> dict[str, tuple[int, int]]:
    return {
        name: (t.rechecked, t.requarantined) for name, t in report.tables.items() if t.rechecked
    }


def test_a_corrected_birth_date_removes_the_stale_flag_of_the_stored_tumour(
    tmp_path: Path,
) -> None:
    rows = edited(clean_registry(), "patient", 0, birth_date="1985-01-01")  # age 25 at diagnosis
    rows = edited(rows, "tumour", 0, behaviour="1")  # a warning of the tumour's own values
    store = tmp_path / "node.duckdb"
    ingest(store, tmp_path / "a", rows)
    own = ("tumour", "T000", "tumour.non_malignant_outside_cns")
    assert flags(store) == [("tumour", "T000", "tumour.age_out_of_scope"), own]
    fixed = {"patient": clean_registry()["patient"]}  # patient.csv alone, P000 corrected
    report = ingest(store, tmp_path / "b", fixed)
    assert flags(store) == [own]
    assert report.rechecked == 6 and report.requarantined == 0
    assert rechecked(report) == {t: (1, 0) for t in BELOW_PATIENT}
    assert len(stored(store, "tumour")) == 6


def test_a_birth_date_made_wrong_flags_the_stored_tumour_naming_the_change(
    tmp_path: Path,
) -> None:
    rows = clean_registry()
    store = tmp_path / "node.duckdb"
    ingest(store, tmp_path / "a", rows)
    wrong = edited(rows, "patient", 0, birth_date="1985-01-01")
    ingest(store, tmp_path / "b", {"patient": wrong["patient"]})
    assert flags(store) == [("tumour", "T000", "tumour.age_out_of_scope")]
    con = duckdb.connect(str(store), read_only=True)
    ((message, source),) = con.execute(
        "SELECT message, source_file FROM quality_flag WHERE record_key = 'T000'"
    ).fetchall()
    con.close()
    assert source == "a/tumour.csv"
    assert message.startswith("a/tumour.csv row 1: diagnosis_date '2010-02-01' gives age 25")
    assert "[tumour.age_out_of_scope]" in message
    assert "after the change of patient 'P000' in b/patient.csv row 1" in message


def test_a_birth_date_after_a_stored_diagnosis_quarantines_the_tumour_and_its_children(
    tmp_path: Path, ccdp
) -> None:
    rows = clean_registry()
    store = tmp_path / "node.duckdb"
    ingest(store, tmp_path / "a", rows)
    late = edited(rows, "patient", 2, birth_date="2011-01-01")  # diagnosis 2010-02-01
    out = json.loads(
        ccdp(
            "ingest",
            write_native(tmp_path / "b", {"patient": late["patient"]}),
            "--store",
            store,
            "--json",
        ).stdout
    )
    assert (out["rows_read"], out["accepted"], out["quarantined"]) == (6, 6, 0)
    assert (out["rechecked"], out["requarantined"]) == (6, 6)
    for table in BELOW_PATIENT:
        counts = out["tables"][table]
        assert (counts["rows_read"], counts["rechecked"], counts["requarantined"]) == (0, 1, 1)
    assert out["tables"]["patient"]["rechecked"] == 0
    assert "T002" not in set(stored(store, "tumour")["tumour_id"])
    assert "E002a" not in set(stored(store, "event")["event_id"])
    assert len(stored(store, "treatment")) == 5 and len(stored(store, "specimen")) == 5
    assert stored(store, "patient").set_index("patient_id").loc["P002", "birth_date"] == (
        pd.Timestamp("2011-01-01")
    )
    listed = json.loads(ccdp("quarantine", "list", "--store", store, "--json").stdout)
    by_table = {r["table"]: r for r in listed}
    assert set(by_table) == set(BELOW_PATIENT)
    tumour = by_table["tumour"]
    assert tumour["key"] == "T002" and tumour["ingest_id"] == out["ingest_id"]
    assert (tumour["source_file"], tumour["source_row"]) == ("a/tumour.csv", 3)
    assert tumour["edit_ids"] == ["tumour.diagnosis_before_birth"]
    assert tumour["fields"] == ["diagnosis_date"]
    (message,) = tumour["messages"]
    assert message.startswith("a/tumour.csv row 3: diagnosis_date '2010-02-01' is before")
    assert "[tumour.diagnosis_before_birth]" in message
    assert (
        "tumour 'T002' checked again after the change of patient 'P002' in b/patient.csv row 3"
        in message
    )
    assert tumour["raw"]["diagnosis_date"] == "2010-02-01" and tumour["raw"]["behaviour"] == "3"
    assert by_table["event"]["edit_ids"] == ["ref.parent_quarantined"]
    assert by_table["treatment"]["edit_ids"] == ["ref.parent_quarantined"]
    assert by_table["specimen"]["edit_ids"] == ["ref.parent_quarantined", "specimen.before_birth"]
    assert by_table["trial_enrolment"]["edit_ids"] == ["trial_enrolment.before_birth"]
    report = ccdp("quality", "--store", store, "--json").stdout
    assert json.loads(report)["tables"]["tumour"]["quarantined"] == 1


def test_children_sent_again_with_the_parent_are_not_rechecked_unless_their_parent_leaves(
    tmp_path: Path,
) -> None:
    rows = clean_registry()
    store = tmp_path / "node.duckdb"
    ingest(store, tmp_path / "a", rows)
    late = edited(rows, "patient", 2, birth_date="2011-01-01")
    # the event comes again (it was checked against the stored tumour, which now leaves)
    report = ingest(store, tmp_path / "b", {"patient": late["patient"], "event": rows["event"]})
    assert report.tables["event"].accepted == len(rows["event"])
    assert (report.tables["event"].rechecked, report.tables["event"].requarantined) == (1, 1)
    assert "E002a" not in set(stored(store, "event")["event_id"])
    # the whole registry again, with P002 fixed: every row comes back, nothing is rechecked
    again = ingest(store, tmp_path / "c", rows)
    assert again.rechecked == 0 and again.quarantined == 0
    assert len(stored(store, "tumour")) == 6


def test_a_changed_tumour_rechecks_its_stored_events_and_treatments(tmp_path: Path) -> None:
    rows = clean_registry()
    store = tmp_path / "node.duckdb"
    ingest(store, tmp_path / "a", rows)
    later = edited(rows, "tumour", 0, diagnosis_date="2010-04-01")  # after remission 2010-03-15
    report = ingest(store, tmp_path / "b", {"tumour": later["tumour"]})
    assert rechecked(report) == {
        "event": (1, 1),
        "treatment": (1, 0),
        "biomarker": (1, 0),
        "specimen": (1, 0),
    }
    assert "E000a" not in set(stored(store, "event")["event_id"])
    assert flags(store) == [("treatment", "X000", "treatment.before_diagnosis")]
    con = duckdb.connect(str(store), read_only=True)
    ((message,),) = con.execute("SELECT messages FROM quarantine").fetchall()
    con.close()
    assert "[event.before_diagnosis]" in message
    assert "after the change of tumour 'T000' in b/tumour.csv row 1" in message


def test_a_stored_row_moved_to_quarantine_keeps_the_entry_of_its_new_version(
    tmp_path: Path,
) -> None:
    rows = clean_registry()
    store = tmp_path / "node.duckdb"
    ingest(store, tmp_path / "a", rows)
    late = edited(rows, "patient", 2, birth_date="2011-01-01")
    bad = edited(rows, "tumour", 2, topography="C4")  # the new version of T002 fails itself
    report = ingest(store, tmp_path / "b", {"patient": late["patient"], "tumour": bad["tumour"]})
    counts = report.tables["tumour"]
    assert (counts.quarantined, counts.rechecked, counts.requarantined) == (1, 1, 1)
    con = duckdb.connect(str(store), read_only=True)
    entries = con.execute(
        "SELECT source_file, edit_ids FROM quarantine WHERE record_key = 'T002' ORDER BY ALL"
    ).fetchall()
    con.close()
    assert entries == [
        ("a/tumour.csv", "tumour.diagnosis_before_birth"),
        ("b/tumour.csv", "code.icdo3_topography;tumour.diagnosis_before_birth"),
    ]


def test_a_sex_change_conflicting_with_a_stored_site_follows_the_edit_severity(
    tmp_path: Path,
) -> None:
    rows = edited(clean_registry(), "tumour", 0, topography="C62.9")  # testis, P000 is male
    rows = edited(rows, "tumour", 2, morphology="9510")  # retinoblastoma, P002 born 2005
    store = tmp_path / "node.duckdb"
    first = ingest(store, tmp_path / "a", rows)
    assert first.quarantined == 0 and flags(store) == []
    changed = edited(rows, "patient", 0, sex="female")
    changed = edited(changed, "patient", 2, birth_date="2004-01-01")  # 6 at diagnosis: a warning
    report = ingest(store, tmp_path / "b", {"patient": changed["patient"]})
    # tumour.sex_site is an error: the tumour and everything below it go to quarantine
    assert rechecked(report)["tumour"] == (2, 1)
    assert rechecked(report)["event"] == (2, 1)
    tumours = set(stored(store, "tumour")["tumour_id"])
    assert "T000" not in tumours and "T002" in tumours
    con = duckdb.connect(str(store), read_only=True)
    quarantined = con.execute("SELECT record_key, edit_ids FROM quarantine ORDER BY ALL").fetchall()
    con.close()
    assert ("T000", "tumour.sex_site") in quarantined
    # tumour.age_histology is a warning: the tumour stays, flagged
    assert flags(store) == [("tumour", "T002", "tumour.age_histology")]


def test_an_unchanged_source_ingested_again_rechecks_nothing(tmp_path: Path) -> None:
    rows = edited(clean_registry(), "patient", 0, birth_date="1985-01-01")
    store = tmp_path / "node.duckdb"
    ingest(store, tmp_path / "a", rows)
    before = flags(store)
    again = ingest(store, tmp_path / "a", rows)
    assert again.rechecked == 0 and again.requarantined == 0
    assert all(t.rechecked == 0 for t in again.tables.values())
    only_patients = ingest(store, tmp_path / "p", {"patient": rows["patient"]})
    assert only_patients.rechecked == 0 and set(only_patients.tables) == {"patient"}
    assert flags(store) == before


def test_a_failure_later_in_the_same_ingest_leaves_the_store_exactly_as_it_was(
    tmp_path: Path,
) -> None:
    rows = clean_registry()
    store = tmp_path / "node.duckdb"
    ingest(store, tmp_path / "a", rows)
    before = store_digest(store)
    late = edited(rows, "patient", 2, birth_date="2011-01-01")
    folder = write_native(tmp_path / "b", {"patient": late["patient"]})
    (folder / "treatment.csv").write_text("treatment_id,tumour_id\nX9,T002\n", encoding="utf-8")
    with pytest.raises(IngestError, match="missing column"):
        ingest_native(store, folder, progress=False, today=TODAY)
    assert store_digest(store) == before


def test_a_failure_after_the_recheck_rolls_it_back_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = clean_registry()
    store = tmp_path / "node.duckdb"
    ingest(store, tmp_path / "a", rows)
    before = store_digest(store)
    late = edited(rows, "patient", 2, birth_date="2011-01-01")

    def fail(*_args: object) -> None:
        raise RuntimeError("disk full")

    # fault injection at the last statement of the transaction, after the recheck's writes
    monkeypatch.setattr(pipeline, "_log", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_native(
            store, write_native(tmp_path / "b", {"patient": late["patient"]}), progress=False
        )
    assert store_digest(store) == before
