"""The ingest core: typing, every edit, quarantine, upsert, orphans, atomicity, pseudonyms."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccdp.ingest import pipeline
from ccdp.ingest.native import read_native_folder
from ccdp.ingest.pipeline import IngestReport, ingest_frames, ingest_native
from ccdp.ingest.pseudonym import pseudonym
from ccdp.model import load_model
from ccdp.store import NodeStore
from ccdp.store.config import node_config_path, pseudonym_key
from tests.ingest.registry import Rows, clean_registry, edited, store_digest, write_native

TODAY = date(2024, 1, 15)


def ingest_rows(tmp_path: Path, rows: Rows, name: str = "site") -> tuple[Path, IngestReport]:
    store = tmp_path / "node.duckdb"
    folder = write_native(tmp_path / name, rows)
    return store, ingest_native(store, folder, progress=False, today=TODAY)


def quarantine(store: Path) -> pd.DataFrame:
    with NodeStore(store, read_only=True) as s:
        return s.read("quarantine")


def flags(store: Path) -> pd.DataFrame:
    with NodeStore(store, read_only=True) as s:
        return s.read("quality_flag")


def assert_invariant(report: IngestReport) -> None:
    assert report.rows_read == report.accepted + report.quarantined
    for t in report.tables.values():
        assert t.rows_read == t.accepted + t.quarantined


def test_clean_registry_is_accepted_whole_and_typed(tmp_path: Path) -> None:
    rows = clean_registry()
    store, report = ingest_rows(tmp_path, rows)
    assert report.quarantined == 0 and report.flagged == 0
    assert report.rows_read == sum(len(v) for v in rows.values())
    assert_invariant(report)
    with NodeStore(store, read_only=True) as s:
        patient = s.read("patient")
        tumour = s.read("tumour")
        specimen = s.read("specimen")
        population = s.read("population")
    assert list(patient["patient_id"]) == [r["patient_id"] for r in rows["patient"]]
    assert patient.loc[1, "birth_date"] == pd.Timestamp("2005-01-15")
    assert list(patient["birth_date_precision"][:3]) == ["day", "month", "day"]
    assert tumour["behaviour"].dtype.kind == "i" and tumour["wbc_at_diagnosis"].iloc[0] == 10.5
    assert bool(specimen["available"].iloc[0]) is True
    assert population["population"].sum() == 2 * (350000 + 1400000)
    # derived at ingest by the ICCC-3 recoder: precursor-cell leukaemia
    assert tumour[
        ["iccc_group", "iccc_subgroup", "iccc_recode"]
    ].drop_duplicates().values.tolist() == [["I", "Ia", "011"]]
    assert set(patient["_source_file"]) == {"site/patient.csv"}
    assert list(patient["_source_row"]) == list(range(1, len(rows["patient"]) + 1))


ERRORS = [
    ("patient", 0, {"sex": ""}, "required", "sex"),
    ("patient", 0, {"birth_date": "2005-02-30"}, "type", "birth_date"),
    ("patient", 0, {"sex": "M"}, "allowed", "sex"),
    ("patient", 0, {"country": "France"}, "code.iso3166_alpha2", "country"),
    ("patient", 0, {"consent": "DUO:0000042 GRU"}, "code.duo", "consent"),
    ("patient", 0, {"birth_date": "1890-01-01"}, "date.range", "birth_date"),
    ("patient", 0, {"last_contact_date": "2030-01-01"}, "date.range", "last_contact_date"),
    (
        "patient",
        4,
        {"death_date": "2004-01-01", "last_contact_date": "2004-01-01"},
        "patient.death_before_birth",
        "death_date",
    ),
    (
        "patient",
        0,
        {"last_contact_date": "2004-12-31"},
        "patient.last_contact_before_birth",
        "last_contact_date",
    ),
    (
        "patient",
        4,
        {"last_contact_date": "2019-01-01"},
        "patient.last_contact_after_death",
        "last_contact_date",
    ),
    ("patient", 0, {"death_date": "2019-01-01"}, "patient.death_date_not_dead", "vital_status"),
    ("tumour", 0, {"wbc_at_diagnosis": "5000"}, "range", "wbc_at_diagnosis"),
    ("tumour", 0, {"wbc_at_diagnosis": "12,5"}, "type", "wbc_at_diagnosis"),
    ("tumour", 0, {"behaviour": "7"}, "allowed", "behaviour"),
    ("tumour", 0, {"topography": "C4"}, "code.icdo3_topography", "topography"),
    ("tumour", 0, {"morphology": "98361"}, "code.icdo3_morphology", "morphology"),
    (
        "tumour",
        0,
        {"diagnosis_date": "2004-06-01"},
        "tumour.diagnosis_before_birth",
        "diagnosis_date",
    ),
    (
        "tumour",
        4,
        {"diagnosis_date": "2018-06-01"},
        "tumour.diagnosis_after_death",
        "diagnosis_date",
    ),
    (
        "tumour",
        0,
        {"diagnosis_date": "2021-01-01"},
        "tumour.diagnosis_after_last_contact",
        "diagnosis_date",
    ),
    (
        "tumour",
        0,
        {"frontline_end_date": "2009-01-01"},
        "tumour.frontline_end_before_diagnosis",
        "frontline_end_date",
    ),
    ("tumour", 1, {"topography": "C62.9"}, "tumour.sex_site", "topography"),
    ("tumour", 0, {"topography": "C56.9"}, "tumour.sex_site", "topography"),
    ("tumour", 0, {"behaviour": "2"}, "tumour.behaviour_site", "behaviour"),
    ("event", 0, {"event_date": "2009-01-01"}, "event.before_diagnosis", "event_date"),
    ("event", 4, {"event_date": "2018-06-01"}, "event.after_death", "event_date"),
    ("event", 0, {"event_type": "death"}, "event.death_but_alive", "event_type"),
    (
        "event",
        1,
        {"event_type": "relapse", "relapse_site": "testis", "event_date": "2011-01-01"},
        "event.testis_relapse_female",
        "relapse_site",
    ),
    ("event", 0, {"bm_blasts_pct": "120"}, "range", "bm_blasts_pct"),
    ("treatment", 0, {"end_date": "2010-01-01"}, "treatment.end_before_start", "end_date"),
    (
        "treatment",
        4,
        {"start_date": "2018-06-01", "end_date": ""},
        "treatment.after_death",
        "start_date",
    ),
    ("treatment", 0, {"type": ""}, "required", "type"),
    (
        "trial_enrolment",
        0,
        {"enrolment_date": "2004-01-01"},
        "trial_enrolment.before_birth",
        "enrolment_date",
    ),
    (
        "trial_enrolment",
        2,
        {"enrolment_date": "2019-01-01"},
        "trial_enrolment.after_death",
        "enrolment_date",
    ),
    ("biomarker", 0, {"date": "2004-01-01"}, "biomarker.before_birth", "date"),
    ("specimen", 0, {"collection_date": "2004-01-01"}, "specimen.before_birth", "collection_date"),
    ("specimen", 0, {"available": "yes"}, "type", "available"),
    ("population", 0, {"population": "-5"}, "range", "population"),
    ("population", 0, {"year": "1800"}, "range", "year"),
    ("population", 0, {"age_group": "0-4"}, "allowed", "age_group"),
]


@pytest.mark.parametrize(("table", "index", "changes", "edit_id", "field"), ERRORS)
def test_error_edits_quarantine_the_row_with_a_message_naming_file_row_field_value(
    tmp_path: Path, table: str, index: int, changes: dict[str, str], edit_id: str, field: str
) -> None:
    rows = edited(clean_registry(), table, index, **changes)
    store, report = ingest_rows(tmp_path, rows)
    assert_invariant(report)
    tdef = load_model().table(table)
    key = "|".join(rows[table][index][k] for k in tdef.primary_key)
    q = quarantine(store)
    mine = q[(q["table_name"] == table) & (q["record_key"] == key)]
    assert len(mine) == 1, q[["table_name", "record_key", "edit_ids"]]
    reasons = json.loads(mine["reasons"].iloc[0])
    hit = [r for r in reasons if r["edit_id"] == edit_id and r["field"] == field]
    assert hit, reasons
    value = rows[table][index][field]
    message = hit[0]["message"]
    assert message.startswith(f"site/{table}.csv row {index + 1}: {field} ")
    assert (f"'{value}'" if value else "(empty)") in message
    assert message.endswith(f"[{edit_id}]")
    assert int(mine["source_row"].iloc[0]) == index + 1
    assert json.loads(mine["raw"].iloc[0])[field] == (value or None)
    with NodeStore(store, read_only=True) as s:
        stored = s.read(table)
    stored_keys = stored[tdef.primary_key].astype(str).agg("|".join, axis=1)
    assert key not in set(stored_keys)


WARNINGS = [
    (
        [("patient", 4, {"death_date": "", "cause_of_death": ""})],
        "patient",
        4,
        "patient.dead_without_death_date",
    ),
    ([("patient", 0, {"cause_of_death": "cancer"})], "patient", 0, "patient.cause_without_death"),
    ([("tumour", 0, {"behaviour": "1"})], "tumour", 0, "tumour.non_malignant_outside_cns"),
    (
        [
            ("tumour", 0, {"morphology": "9510", "topography": "C69.2"}),
            ("patient", 0, {"birth_date": "2003-01-01"}),
        ],
        "tumour",
        0,
        "tumour.age_histology",
    ),
    (
        [
            ("tumour", 0, {"morphology": "9650", "topography": "C77.0"}),
            ("patient", 0, {"birth_date": "2008-01-01"}),
        ],
        "tumour",
        0,
        "tumour.age_histology",
    ),
    (
        [
            ("tumour", 0, {"morphology": "8970", "topography": "C22.0"}),
            ("patient", 0, {"birth_date": "2003-06-01"}),
        ],
        "tumour",
        0,
        "tumour.age_histology",
    ),
    (
        [
            ("tumour", 0, {"morphology": "9500", "topography": "C74.9"}),
            ("patient", 0, {"birth_date": "1999-06-01"}),
        ],
        "tumour",
        0,
        "tumour.age_histology",
    ),
    ([("patient", 0, {"birth_date": "1985-01-01"})], "tumour", 0, "tumour.age_out_of_scope"),
    ([("event", 0, {"event_date": "2021-01-01"})], "event", 0, "event.after_last_contact"),
    ([("event", 5, {"event_date": "2018-02-01"})], "event", 5, "event.death_date_mismatch"),
    ([("event", 0, {"relapse_site": "cns"})], "event", 0, "event.relapse_site_not_relapse"),
    (
        [("treatment", 0, {"start_date": "2010-01-15"})],
        "treatment",
        0,
        "treatment.before_diagnosis",
    ),
    ([("specimen", 4, {"collection_date": "2018-04-01"})], "specimen", 4, "specimen.after_death"),
]


@pytest.mark.parametrize(("changes", "table", "index", "edit_id"), WARNINGS)
def test_warning_edits_keep_the_row_and_flag_it(
    tmp_path: Path, changes: list, table: str, index: int, edit_id: str
) -> None:
    rows = clean_registry()
    for t, i, c in changes:
        rows = edited(rows, t, i, **c)
    store, report = ingest_rows(tmp_path, rows)
    assert report.quarantined == 0, quarantine(store)["messages"].tolist()
    assert_invariant(report)
    key = "|".join(rows[table][index][k] for k in load_model().table(table).primary_key)
    f = flags(store)
    mine = f[(f["table_name"] == table) & (f["record_key"] == key)]
    assert edit_id in set(mine["edit_id"]), f[["table_name", "record_key", "edit_id"]]
    assert report.flagged >= 1 and report.edits[edit_id] >= 1
    assert all(mine["severity"] == "warning")


def test_clean_rows_of_age_histology_boundaries_are_not_flagged(tmp_path: Path) -> None:
    """Retinoblastoma at 5 years 11 months is not 'after 5'."""
    rows = edited(clean_registry(), "tumour", 0, morphology="9510", topography="C69.2")
    rows = edited(rows, "patient", 0, birth_date="2004-03-01")
    _store, report = ingest_rows(tmp_path, rows)
    assert report.flagged == 0 and report.quarantined == 0


def test_identical_duplicate_rows_keep_the_first_row(tmp_path: Path) -> None:
    rows = clean_registry()
    rows["patient"].append(dict(rows["patient"][2]))
    store, report = ingest_rows(tmp_path, rows)
    assert report.tables["patient"].quarantined == 1
    q = quarantine(store)
    assert q["edit_ids"].tolist() == ["key.duplicate"]
    assert int(q["source_row"].iloc[0]) == len(rows["patient"])
    assert "duplicates the key of site/patient.csv row 3" in q["messages"].iloc[0]
    with NodeStore(store, read_only=True) as s:
        assert s.read("patient").set_index("patient_id").loc["P002", "sex"] == "male"


def test_duplicate_keys_with_conflicting_values_keep_neither_row(tmp_path: Path) -> None:
    """Nothing says whether P002 is male or female: both rows wait, with their children."""
    rows = clean_registry()
    rows["patient"].append(dict(rows["patient"][2], sex="female"))
    store, report = ingest_rows(tmp_path, rows)
    assert report.tables["patient"].quarantined == 2
    q = quarantine(store)
    mine = q[q["table_name"] == "patient"].sort_values("source_row")
    assert mine["edit_ids"].tolist() == ["key.conflict", "key.duplicate"]
    assert [int(r) for r in mine["source_row"]] == [3, len(rows["patient"])]
    said = "patient_id 'P002' duplicate key with conflicting values (sex female vs male)"
    assert all(said in m for m in mine["messages"])
    assert set(q[q["table_name"] != "patient"]["edit_ids"]) == {"ref.parent_quarantined"}
    with NodeStore(store, read_only=True) as s:
        assert "P002" not in set(s.read("patient")["patient_id"])


def test_children_of_a_quarantined_parent_are_quarantined_too(tmp_path: Path) -> None:
    rows = edited(clean_registry(), "patient", 0, sex="?")
    store, report = ingest_rows(tmp_path, rows)
    q = quarantine(store)
    cascaded = q[q["edit_ids"] == "ref.parent_quarantined"]
    # tumour T000, then its event, treatment, biomarker, specimen; and the trial enrolment
    assert sorted(cascaded["table_name"]) == sorted(
        ["tumour", "event", "treatment", "biomarker", "specimen", "trial_enrolment"]
    )
    assert report.quarantined == 7
    assert_invariant(report)


def test_orphans_are_checked_against_the_store_too(tmp_path: Path) -> None:
    rows = clean_registry()
    store = tmp_path / "node.duckdb"
    first = {"patient": rows["patient"]}
    ingest_native(store, write_native(tmp_path / "a", first), progress=False, today=TODAY)
    rest = {k: v for k, v in rows.items() if k != "patient"}
    rest["tumour"] = [*rest["tumour"], dict(rest["tumour"][0], tumour_id="T999", patient_id="P9")]
    report = ingest_native(store, write_native(tmp_path / "b", rest), progress=False, today=TODAY)
    assert report.quarantined == 1
    q = quarantine(store)
    assert q["edit_ids"].tolist() == ["ref.orphan"] and q["record_key"].tolist() == ["T999"]
    assert "neither in this ingest nor in the store" in q["messages"].iloc[0]


def test_cross_table_edits_use_parents_already_in_the_store(tmp_path: Path) -> None:
    rows = clean_registry()
    store = tmp_path / "node.duckdb"
    ingest_native(
        store,
        write_native(tmp_path / "a", {"patient": rows["patient"]}),
        progress=False,
        today=TODAY,
    )
    late = {"tumour": [dict(rows["tumour"][1], topography="C62.9")]}
    report = ingest_native(store, write_native(tmp_path / "b", late), progress=False, today=TODAY)
    assert report.quarantined == 1
    assert quarantine(store)["edit_ids"].tolist() == ["tumour.sex_site"]


def test_reingesting_the_same_source_is_idempotent(tmp_path: Path) -> None:
    rows = edited(clean_registry(), "tumour", 0, behaviour="1")  # a warning
    rows = edited(rows, "patient", 3, sex="?")  # an error with cascades
    store, first = ingest_rows(tmp_path, rows)
    digest = {k: v for k, v in store_digest(store).items() if k != "ingest_log"}
    data_only = _content_without_ingest_ids(store)
    second = ingest_native(store, tmp_path / "site", progress=False, today=TODAY)
    assert (second.rows_read, second.accepted, second.quarantined, second.flagged) == (
        first.rows_read,
        first.accepted,
        first.quarantined,
        first.flagged,
    )
    assert _content_without_ingest_ids(store) == data_only
    assert set(store_digest(store)) == set(digest) | {"ingest_log"}
    with NodeStore(store, read_only=True) as s:
        assert s.count("ingest_log") == 2


def _content_without_ingest_ids(store: Path) -> dict[str, list]:
    con = duckdb.connect(str(store), read_only=True)
    out = {}
    for t in [*load_model().table_names, "quarantine", "quality_flag"]:
        cols = [
            c[0]
            for c in con.execute(f'DESCRIBE "{t}"').fetchall()
            if c[0] not in ("_ingest_id", "ingest_id", "quarantined_at")
        ]
        sel = ", ".join(f'"{c}"' for c in cols)
        out[t] = con.execute(f'SELECT {sel} FROM "{t}" ORDER BY ALL').fetchall()
    con.close()
    return out


def test_fixed_rows_leave_quarantine_on_reingest(tmp_path: Path) -> None:
    from ccdp.ingest.quarantine import export_quarantine

    rows = edited(clean_registry(), "patient", 0, sex="?")
    store, report = ingest_rows(tmp_path, rows)
    assert report.quarantined == 7
    out = tmp_path / "fix"
    written = export_quarantine(store, out)
    text = written["patient"].read_text(encoding="utf-8")
    assert "_edit_ids" in text and "allowed" in text
    written["patient"].write_text(text.replace("P000,?,", "P000,male,"), encoding="utf-8")
    again = ingest_native(store, out, progress=False, today=TODAY)
    assert again.quarantined == 0 and again.accepted == 7
    entries = quarantine(store)
    assert len(entries) == 7 and set(entries["resolved_by"]) == {again.ingest_id}
    with NodeStore(store, read_only=True) as s:
        assert s.count("tumour") == len(rows["tumour"])


def test_upsert_replaces_rows_by_key(tmp_path: Path) -> None:
    rows = clean_registry()
    store, _ = ingest_rows(tmp_path, rows)
    update = {"patient": [dict(rows["patient"][0], last_contact_date="2023-01-01")]}
    ingest_native(store, write_native(tmp_path / "upd", update), progress=False, today=TODAY)
    with NodeStore(store, read_only=True) as s:
        patient = s.read("patient").set_index("patient_id")
    assert len(patient) == len(rows["patient"])
    assert patient.loc["P000", "last_contact_date"] == pd.Timestamp("2023-01-01")
    assert patient.loc["P000", "_source_file"] == "upd/patient.csv"


def test_frames_and_native_give_the_same_store(tmp_path: Path) -> None:
    rows = edited(clean_registry(), "tumour", 2, topography="C4")
    folder = write_native(tmp_path / "site", rows)
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    ra = ingest_native(a, folder, progress=False, today=TODAY)
    rb = ingest_frames(b, read_native_folder(folder), "site", progress=False, today=TODAY)
    assert ra.tables == rb.tables and ra.edits == rb.edits
    assert _content_without_ingest_ids(a) == _content_without_ingest_ids(b)


def test_frames_may_omit_optional_columns_but_not_add_unknown_ones(tmp_path: Path) -> None:
    from ccdp.ingest.errors import IngestError

    frame = pd.DataFrame(clean_registry()["patient"]).drop(columns=["consent", "cause_of_death"])
    frame["_source_file"] = "x.xlsx"
    frame["_source_row"] = range(2, len(frame) + 2)
    report = ingest_frames(
        tmp_path / "s.duckdb", {"patient": frame}, "x", progress=False, today=TODAY
    )
    assert report.accepted == len(frame)
    with pytest.raises(IngestError, match="table patient has unknown column 'colour'"):
        ingest_frames(
            tmp_path / "s.duckdb", {"patient": frame.assign(colour="red")}, "x", progress=False
        )
    with pytest.raises(IngestError, match="unknown table 'patients'"):
        ingest_frames(tmp_path / "s.duckdb", {"patients": frame}, "x", progress=False)


def test_a_failure_inside_the_transaction_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = clean_registry()
    store, _ = ingest_rows(tmp_path, rows)
    before = store_digest(store)
    changed = edited(rows, "patient", 0, last_contact_date="2023-01-01", sex="?")

    def fail(*_args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "_log", fail)  # fails after every write of the ingest
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_native(store, write_native(tmp_path / "b", changed), progress=False)
    assert store_digest(store) == before


def test_a_failed_first_ingest_leaves_no_store_behind(tmp_path: Path) -> None:
    from ccdp.ingest.errors import IngestError

    folder = write_native(tmp_path / "site", clean_registry())
    (folder / "tumour.csv").write_text("tumour_id,patient_id\nT1,P1\n", encoding="utf-8")
    with pytest.raises(IngestError, match="missing column"):
        ingest_native(tmp_path / "new.duckdb", folder, progress=False)
    assert not (tmp_path / "new.duckdb").exists()


def test_a_native_line_over_duckdbs_limit_names_row_and_field_and_stores_nothing(
    tmp_path: Path,
) -> None:
    """DuckDB says only 'maximum line size exceeded'; the error names file, line, data row,
    field and limit, and the store is as it was."""
    from ccdp.ingest.errors import IngestError
    from ccdp.ingest.native import MAX_LINE_BYTES

    rows = clean_registry()
    store, _ = ingest_rows(tmp_path, rows)
    before = store_digest(store)
    folder = write_native(
        tmp_path / "b", edited(rows, "patient", 2, sex="x" * (MAX_LINE_BYTES + 1))
    )
    with pytest.raises(IngestError) as err:
        ingest_native(store, folder, progress=False, today=TODAY)
    assert str(err.value).startswith(
        f"b/patient.csv, line 4 (data row 3), field 'sex': {MAX_LINE_BYTES + 1:,} bytes, more "
        f"than the limit of {MAX_LINE_BYTES:,} bytes (16 MiB) for one line"
    )
    assert store_digest(store) == before


CELLS = st.sampled_from(["", "?", "2099-01-01", "1.5", "C4", "-1", "DUO:1", "99999"])


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_rows_read_is_always_accepted_plus_quarantined(tmp_path_factory, data) -> None:
    rows = clean_registry(8)
    for _ in range(data.draw(st.integers(0, 8))):
        table = data.draw(st.sampled_from(["patient", "tumour", "event", "treatment", "specimen"]))
        index = data.draw(st.integers(0, len(rows[table]) - 1))
        field = data.draw(st.sampled_from(sorted(rows[table][index])))
        rows = edited(rows, table, index, **{field: data.draw(CELLS)})
    tmp = tmp_path_factory.mktemp("inv")
    store, report = ingest_rows(tmp, rows)
    assert_invariant(report)
    with NodeStore(store, read_only=True) as s:
        for table, counts in report.tables.items():
            assert s.count(table) == counts.accepted
        assert s.count("quarantine") == report.quarantined


def test_identifiers_are_pseudonymised_at_the_door(tmp_path: Path) -> None:
    rows = clean_registry()
    frames = {t: pd.DataFrame(r) for t, r in rows.items() if r}
    frames["patient"]["_identifier_given_name"] = [f"Zoé{i}" for i in range(len(rows["patient"]))]
    frames["patient"]["_identifier_family_name"] = "Dupont-Étienne"
    store = tmp_path / "node.duckdb"
    report = ingest_frames(store, frames, "site", progress=False, today=TODAY)
    assert report.pseudonymised and report.quarantined == 0
    key = pseudonym_key(store, create=False)
    assert node_config_path(store) == tmp_path / "node.node.yaml"
    assert node_config_path(store).stat().st_mode & 0o077 == 0
    expected = {pseudonym(key, r["patient_id"]) for r in rows["patient"]}
    with NodeStore(store, read_only=True) as s:
        assert set(s.read("patient")["patient_id"]) == expected
        assert set(s.read("tumour")["patient_id"]) == expected
        assert set(s.read("trial_enrolment")["patient_id"]) <= expected
        dump = json.dumps(
            {t: s.read(t).astype(str).to_dict("records") for t in s.tables()}, ensure_ascii=False
        )
    assert "Zoé" not in dump and "Dupont" not in dump and "P000" not in dump
    assert key.hex() not in store.read_bytes().decode("latin-1")
    # the stored pseudonym is HMAC-SHA256 of the source key, computed here independently
    p000 = hmac.new(key, b"P000", hashlib.sha256).hexdigest()
    with NodeStore(store, read_only=True) as s:
        stored = set(s.read("patient")["patient_id"])
    assert "psn_" + p000[:32] in stored  # prefix and 128 bits of the digest
    # same key next time: the same child gets the same pseudonym
    again = ingest_frames(store, frames, "site", progress=False, today=TODAY)
    assert again.accepted == report.accepted
    with NodeStore(store, read_only=True) as s:
        assert s.count("patient") == len(rows["patient"])
        assert set(s.read("patient")["patient_id"]) == stored


def test_config_keeps_other_keys_when_the_key_is_created(tmp_path: Path) -> None:
    store = tmp_path / "site.duckdb"
    node_config_path(store).write_text("disclosure:\n  min_cell: 5\n", encoding="utf-8")
    key = pseudonym_key(store)
    text = node_config_path(store).read_text(encoding="utf-8")
    assert "min_cell: 5" in text and key.hex() in text
    assert pseudonym_key(store) == key


def test_control_characters_in_key_fields_are_quarantined_with_field_and_rule(
    tmp_path: Path,
) -> None:
    from ccdp.ingest.quarantine import quarantine_rows

    rows = edited(clean_registry(), "patient", 0, patient_id="P0\x0000")
    rows = edited(rows, "event", 2, event_id="E002\na")  # quoted in the CSV, so one cell
    rows = edited(rows, "treatment", 3, tumour_id="T003\t")  # a reference is a key too
    rows = edited(rows, "patient", 4, cause_of_death="other\x01")  # not a key: allowed decides
    store, report = ingest_rows(tmp_path, rows)
    listed = quarantine_rows(store)
    by_edit = {
        (r["table"], r["fields"][0]): r for r in listed if "key.control_character" in r["edit_ids"]
    }
    assert set(by_edit) == {
        ("patient", "patient_id"),
        ("event", "event_id"),
        ("treatment", "tumour_id"),
    }
    message = by_edit[("patient", "patient_id")]["messages"][0]
    assert message == (
        "site/patient.csv row 1: patient_id 'P0\\u000000' holds control character U+0000; "
        "keys must be printable text [key.control_character]"
    )
    assert "U+000A" in by_edit[("event", "event_id")]["messages"][0]
    assert "U+0009" in by_edit[("treatment", "tumour_id")]["messages"][0]
    assert report.edits["key.control_character"] == 3
    con = duckdb.connect(str(store), read_only=True)
    try:
        for table, column in [
            ("patient", "patient_id"),
            ("event", "event_id"),
            ("treatment", "tumour_id"),
            ("tumour", "patient_id"),
        ]:
            bad = con.execute(
                f"SELECT count(*) FROM {table} WHERE regexp_matches({column}, '\\p{{Cc}}')"
            ).fetchall()[0][0]
            assert bad == 0, (table, column)
    finally:
        con.close()


def test_every_identifier_is_pseudonymised_and_foreign_keys_still_join(tmp_path: Path) -> None:
    """A native export with direct identifiers: tumour, event, treatment and specimen ids are
    site values too (often the dossier number), so they get pseudonyms like patient ids."""
    from ccdp.ingest.quarantine import export_quarantine

    rows = edited(clean_registry(), "tumour", 1, topography="C62.9")  # T001 quarantined
    folder = write_native(tmp_path / "site", rows)
    ids = "patient_id,family_name\n" + "".join(
        f"{r['patient_id']},Nom{i}\n" for i, r in enumerate(rows["patient"])
    )
    (folder / "identifiers.csv").write_text(ids, encoding="utf-8")
    store = tmp_path / "node.duckdb"
    report = ingest_native(store, folder, progress=False, today=TODAY)
    assert report.pseudonymised and report.quarantined == 5
    key = pseudonym_key(store, create=False)
    with NodeStore(store, read_only=True) as s:
        tumours = s.read("tumour")
        events, specimens = s.read("event"), s.read("specimen")
        assert set(tumours["tumour_id"]) == {
            pseudonym(key, r["tumour_id"]) for r in rows["tumour"] if r["tumour_id"] != "T001"
        }
        assert set(events["event_id"]) == {
            pseudonym(key, r["event_id"]) for r in rows["event"] if r["tumour_id"] != "T001"
        }
        assert set(s.read("treatment")["treatment_id"]) == {
            pseudonym(key, f"X{i:03d}") for i in range(6) if i != 1
        }
        assert set(specimens["specimen_id"]) == {
            pseudonym(key, f"S{i:03d}") for i in range(6) if i != 1
        }
        # foreign keys carry the same pseudonyms as the keys they refer to
        for child in (events, specimens, s.read("biomarker")):
            assert set(child["tumour_id"]) <= set(tumours["tumour_id"])
        assert set(s.read("trial_enrolment")["patient_id"]) <= set(s.read("patient")["patient_id"])
        # the ingest's own id is a timestamp ("20261208T000827-..."): not a site value
        dump = " ".join(
            s.read(t).drop(columns="_ingest_id", errors="ignore").astype(str).to_csv(index=False)
            for t in load_model().table_names
        )
    for raw in ("T000", "E000a", "X000", "S000", "P000"):
        assert raw not in dump
    # the quarantine export gives the data manager the key as her system knows it
    written = export_quarantine(store, tmp_path / "fix")
    (tumour,) = [r for r in csv_rows(written["tumour"])]
    assert tumour["tumour_id"] == tumour["_key"] == pseudonym(key, "T001")
    assert tumour["_source_key"] == "T001" and tumour["_source_row"] == "2"
    assert tumour["_source_file"] == "site/tumour.csv"
    (biomarker,) = csv_rows(written["biomarker"])
    assert biomarker["_source_key"] == "T001|ETV6-RUNX1|2010-02-02"
    # fixed and ingested again (no identifiers there: the pseudonyms stay), the rows join up
    text = written["tumour"].read_text(encoding="utf-8")
    written["tumour"].write_text(text.replace("C62.9", "C42.1"), encoding="utf-8")
    again = ingest_native(store, tmp_path / "fix", progress=False, today=TODAY)
    assert (again.accepted, again.quarantined, again.pseudonymised) == (5, 0, False)
    with NodeStore(store, read_only=True) as s:
        assert pseudonym(key, "E001a") in set(s.read("event")["event_id"])
        assert s.count("tumour") == 6


def csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))
