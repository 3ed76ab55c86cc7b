"""A child without a last-contact date is a real incident case: stored and flagged, counted for
incidence and counts, left out of survival with a note saying how many (through the gate)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd

from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.study import StudyResult, run_study
from ccdp.ingest.pipeline import ingest_native
from ccdp.store import NodeStore
from tests.ingest.registry import Rows, clean_registry, edited, write_native
from tests.storekit import exact_policy

TODAY = date(2024, 1, 15)
N = 12
LOST = 3  # an alive child (index 3) whose registry never recorded a last contact
NOTE = "follow-up: patients of this cohort left out because their follow-up is missing"


def lost_child(n: int = N) -> Rows:
    return edited(clean_registry(n), "patient", LOST, last_contact_date="")


def ingest(tmp_path: Path, rows: Rows, **policy: int) -> Path:
    store = tmp_path / "node.duckdb"
    ingest_native(store, write_native(tmp_path / "site", rows), progress=False, today=TODAY)
    return exact_policy(store, **policy)


def table(store: Path, name: str) -> pd.DataFrame:
    with NodeStore(store, read_only=True) as s:
        return s.read(name)


def study(store: Path, spec: dict) -> StudyResult:
    result = run_study(spec, InProcessTransport([store]))
    assert result.nodes["node"].status == "answered", result.nodes["node"].reason
    return result


def test_a_child_without_last_contact_is_stored_and_flagged_not_quarantined(
    tmp_path: Path,
) -> None:
    store = ingest(tmp_path, lost_child())
    assert table(store, "quarantine").empty
    patient = table(store, "patient")
    assert len(patient) == N and "P003" in set(patient["patient_id"])
    assert len(table(store, "tumour")) == N
    flags = table(store, "quality_flag")
    mine = flags[flags["edit_id"] == "patient.followup_missing"]
    assert list(mine["record_key"]) == ["P003"]
    assert set(mine["severity"]) == {"warning"} and set(mine["field"]) == {"last_contact_date"}
    assert "left out of survival" in mine["message"].iloc[0]


def test_the_child_counts_for_count_and_incidence(tmp_path: Path) -> None:
    store = ingest(tmp_path, lost_child(), min_cell=1, min_cohort=1, min_group=1)
    assert study(store, {"analysis": "count"}).result.total == N  # type: ignore[union-attr]
    rows = study(store, {"analysis": "incidence", "ages": "0-19"}).result.rows  # type: ignore[union-attr]
    assert sum(int(r["cases"]) for r in rows) == N


def test_km_leaves_the_child_out_and_says_how_many(tmp_path: Path) -> None:
    store = ingest(tmp_path, lost_child(), min_cell=1, min_cohort=1, min_group=1)
    result = study(store, {"analysis": "km", "outcome": "os"})
    assert result.result is not None
    assert [g.n for g in result.result.groups] == [N - 1]  # type: ignore[attr-defined]
    assert f"{NOTE}: 1" in (result.nodes["node"].reason or "")
    # the JSON of `ccdp run --json` carries the note with the node's status
    assert f"{NOTE}: 1" in json.dumps(result.to_json())
    # without a missing follow-up there is nothing to say
    clean = tmp_path / "clean"
    clean.mkdir()
    other = ingest(clean, clean_registry(N), min_cell=1, min_cohort=1, min_group=1)
    assert "follow-up" not in (study(other, {"analysis": "km"}).nodes["node"].reason or "")


def test_logrank_and_cox_say_it_too(tmp_path: Path) -> None:
    store = ingest(tmp_path, lost_child(), min_cell=1, min_cohort=1, min_group=1)
    logrank = study(store, {"analysis": "logrank", "by": ["sex"]})
    assert f"{NOTE}: 1" in (logrank.nodes["node"].reason or "")
    count = study(store, {"analysis": "count"})
    assert "follow-up" not in (count.nodes["node"].reason or "")


def test_the_number_goes_through_the_gate(tmp_path: Path) -> None:
    """One child missing follow-up under min_cell 5 is a small count: withheld, not shown."""
    store = ingest(tmp_path, lost_child(), min_cell=5, min_cohort=1, min_group=1)
    reason = study(store, {"analysis": "km"}).nodes["node"].reason or ""
    assert f"{NOTE}: withheld" in reason and f"{NOTE}: 1" not in reason


def test_the_cli_shows_the_note(tmp_path: Path, ccdp) -> None:  # type: ignore[no-untyped-def]
    store = ingest(tmp_path, lost_child(), min_cell=1, min_cohort=1, min_group=1)
    spec = tmp_path / "km.yaml"
    spec.write_text("analysis: km\noutcome: os\n")
    out = ccdp("run", spec, "--store", store).stdout  # the node's line wraps in a table cell
    assert "follow-up is missing: 1" in out and "left out because" in out


def test_a_patient_whose_only_tumour_failed_is_flagged(tmp_path: Path) -> None:
    rows = edited(clean_registry(N), "tumour", 2, morphology="nonsense")
    store = ingest(tmp_path, rows)
    assert "T002" in set(table(store, "quarantine")["record_key"])
    flags = table(store, "quality_flag")
    mine = flags[flags["edit_id"] == "patient.no_valid_tumour"]
    assert list(mine["record_key"]) == ["P002"] and set(mine["severity"]) == {"warning"}
    assert "T002" not in set(table(store, "tumour")["tumour_id"])
    # the fixed tumour, sent alone later, clears the flag
    fixed = {k: [] for k in rows} | {"tumour": [clean_registry(N)["tumour"][2]]}
    ingest_native(store, write_native(tmp_path / "fix", fixed), progress=False, today=TODAY)
    flags = table(store, "quality_flag")
    assert flags[flags["edit_id"] == "patient.no_valid_tumour"].empty


def test_the_acceptance_audit_sees_the_note_the_answer_releases(tmp_path: Path) -> None:
    """A custodian's acceptance audit looks for isolating combinations of every set a
    registered study would release: the follow-up note's set is one of them, as the answer
    records it in the ledger."""
    from ccdp.federation.node.acceptance import study_sets
    from ccdp.federation.node.local import LocalNode

    store = ingest(tmp_path, lost_child(), min_cell=1, min_cohort=1, min_group=1)
    spec = {"title": "OS", "analysis": "km", "outcome": "os"}
    node = LocalNode(store)
    audited = study_sets(node, spec, None, node.policy)
    assert sorted(s.size for s in audited) == [1, N - 1]  # the note's child, the curve's group
