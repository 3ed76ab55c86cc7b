"""OMOP CDM 5.4 export: the official DDL, the DQD's checks at zero failures, each check shown to
fail on a broken copy, the Athena vocabulary path, and the command end to end."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from datetime import date
from pathlib import Path

import duckdb
import pytest

from ccdp.exchange import omop
from ccdp.exchange.omop_check import CheckResult, run_checks
from ccdp.exchange.omop_vocab import VocabularyError
from ccdp.exchange.output import ExportSummary
from ccdp.store import NodeStore
from tests.conftest import run_ccdp
from tests.exchange.omop_athena import write_athena
from tests.storekit import build_store

SPECS = Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "omop-cdm-5.4"
FILLED = {
    "person",
    "observation_period",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "specimen",
    "death",
    "episode",
    "episode_event",
    "cdm_source",
    "metadata",
}


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A realistic store: `ccdp synth` then `ccdp ingest`, 300 patients."""
    root = tmp_path_factory.mktemp("omop_synth")
    run_ccdp("synth", root / "syn", "--countries", "FR", "--patients", "300", "--seed", "7")
    run_ccdp("ingest", root / "syn" / "FR", "--store", root / "s.duckdb")
    return root / "s.duckdb"


def export(
    store: Path, out: Path, vocab: Path | None = None, *, read_only: bool = True
) -> ExportSummary:
    with NodeStore(store, read_only=read_only) as ns:
        return omop.export_store(ns, out, vocab=vocab)


@pytest.fixture(scope="module")
def cdm(synth_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("omop_out") / "cdm.duckdb"
    export(synth_store, out)
    return out


def failures(results: list[CheckResult]) -> list[str]:
    return [str(r) for r in results if r.failed]


@pytest.mark.skipif(not SPECS.is_dir(), reason="the shared specs folder is not beside the repo")
@pytest.mark.parametrize(
    ("shipped", "official"),
    [
        ("omop_cdm_5.4_duckdb_ddl.sql", "OMOPCDM_duckdb_5.4_ddl.sql"),
        ("omop_cdm_5.4_duckdb_primary_keys.sql", "OMOPCDM_duckdb_5.4_primary_keys.sql"),
        ("omop_cdm_5.4_duckdb_constraints.sql", "OMOPCDM_duckdb_5.4_constraints.sql"),
        ("omop_dqd_5.4_field_level.csv", "OMOP_CDMv5.4_Field_Level.csv"),
        ("omop_dqd_5.4_table_level.csv", "OMOP_CDMv5.4_Table_Level.csv"),
    ],
)
def test_shipped_files_are_the_official_ones(shipped: str, official: str) -> None:
    """Below its source header, each shipped file is the OHDSI file byte for byte."""
    text = (Path(omop.__file__).parent / "data" / shipped).read_text(encoding="utf-8")
    body = "".join(
        line
        for line in text.splitlines(keepends=True)
        if not re.match(r"^(--|#) ?Source|^-- \(", line)
    )
    body = re.sub(r"\A(-- .*\n)*?(?=--duckdb|cdmTableName)", "", body)
    assert body == (SPECS / official).read_text(encoding="utf-8")


def test_export_has_the_official_tables_and_columns(cdm: Path, tmp_path: Path) -> None:
    """Every table and column the official DDL creates (run here on an empty database), and the
    official primary keys accepted by DuckDB, which refuses a duplicate or NULL key."""
    ref = duckdb.connect()
    ref.execute(omop.official_sql(omop.DDL_FILE, "main"))
    query = "SELECT table_name, column_name, data_type FROM duckdb_columns() ORDER BY ALL"
    expected = ref.execute(query).fetchall()
    with duckdb.connect(str(cdm), read_only=True) as con:
        assert con.execute(query).fetchall() == expected
    keyed = tmp_path / "keyed.duckdb"
    shutil.copy(cdm, keyed)
    omop.declare_primary_keys(keyed)
    with duckdb.connect(str(keyed), read_only=True) as con:
        pks = con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchone()
    assert pks is not None
    assert pks[0] == omop.official_sql(omop.PRIMARY_KEYS_FILE).count("PRIMARY KEY")
    with duckdb.connect(str(keyed)) as con, pytest.raises(duckdb.ConstraintException):
        con.execute("UPDATE person SET person_id = 1 WHERE person_id = 2")


def test_synthetic_export_passes_every_check(cdm: Path) -> None:
    """DQD field and table checks, official keys, plausibility: zero failures over every table
    the export fills."""
    results = run_checks(cdm)
    assert failures(results) == []
    kinds = Counter(r.check for r in results if r.table in FILLED)
    for kind in (
        "isRequired",
        "isPrimaryKey",
        "isForeignKey",
        "fkDomain",
        "primaryKey",
        "foreignKey",
    ):
        assert kinds[kind] > 0, kind
    assert {r.table for r in results if r.check.startswith("plausible")} >= FILLED - {
        "episode_event",
        "cdm_source",
        "metadata",
    }
    with duckdb.connect(str(cdm), read_only=True) as con:
        for table in FILLED:
            row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None and row[0] > 0, f"{table} is empty"


def test_rows_match_the_store(synth_store: Path, cdm: Path) -> None:
    """Counts and source values against the store read directly."""
    with duckdb.connect(str(synth_store), read_only=True) as s:
        q = lambda sql: s.execute(sql).fetchone()[0]  # noqa: E731
        expected = {
            "person": q("SELECT count(*) FROM patient"),
            "condition_occurrence": q("SELECT count(*) FROM tumour"),
            "death": q(
                "SELECT count(*) FROM patient WHERE vital_status = 'dead' "
                "AND death_date IS NOT NULL"
            ),
            "treatments": q("SELECT count(*) FROM treatment WHERE start_date IS NOT NULL"),
            "courses": q(
                "SELECT count(*) FROM event WHERE event_type IN ('relapse', 'progression')"
            ),
            "specimen": q("SELECT count(*) FROM specimen WHERE collection_date IS NOT NULL"),
        }
        tumour = s.execute(
            "SELECT t.morphology, t.behaviour, t.topography, p.patient_id, t.diagnosis_date, p.sex "
            "FROM tumour t JOIN patient p USING (patient_id) ORDER BY t.tumour_id LIMIT 1"
        ).fetchone()
    with duckdb.connect(str(cdm), read_only=True) as c:
        n = lambda t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: E731
        for table in ("person", "condition_occurrence", "death", "specimen"):
            assert n(table) == expected[table], table
        assert n("drug_exposure") + n("procedure_occurrence") == expected["treatments"]
        assert n("episode") == (
            expected["condition_occurrence"] + expected["courses"] + expected["treatments"]
        )
        codes = [
            r[0]
            for r in c.execute("SELECT condition_source_value FROM condition_occurrence").fetchall()
        ]
        assert all(re.fullmatch(r"\d{4}/\d-C\d{2}\.\d", code) for code in codes)
        row = c.execute(
            "SELECT co.condition_source_value, p.person_source_value, co.condition_start_date, "
            "p.gender_source_value FROM condition_occurrence co JOIN person p USING (person_id) "
            "WHERE co.condition_occurrence_id = 1"
        ).fetchone()
        assert tumour is not None
        assert row == (f"{tumour[0]}/{tumour[1]}-{tumour[2]}", tumour[3], tumour[4], tumour[5])
        ids = [
            r[0]
            for r in c.execute(
                "SELECT person_id FROM person ORDER BY person_source_value"
            ).fetchall()
        ]
        assert ids == list(range(1, len(ids) + 1))
        zero = c.execute("SELECT count(*) FROM person WHERE gender_concept_id <> 0").fetchone()
        assert zero == (0,)
        note = c.execute("SELECT value_as_string FROM metadata WHERE metadata_id = 1").fetchone()
        assert note is not None and "concept id is 0" in note[0]


def _loosen(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Recreate `table` without its NOT NULL and primary-key constraints, so a test can break it."""
    con.execute(f"CREATE TABLE _copy AS SELECT * FROM {table}")
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE _copy RENAME TO {table}")


BREAKS = [
    (
        "isRequired",
        "person",
        "year_of_birth",
        True,
        "UPDATE person SET year_of_birth = NULL WHERE person_id = 3",
    ),
    (
        "isPrimaryKey",
        "measurement",
        "measurement_id",
        True,
        "UPDATE measurement SET measurement_id = 1 WHERE measurement_id = 2",
    ),
    (
        "primaryKey",
        "measurement",
        "measurement_id",
        True,
        "UPDATE measurement SET measurement_id = 1 WHERE measurement_id = 2",
    ),
    (
        "isForeignKey",
        "condition_occurrence",
        "person_id",
        False,
        "UPDATE condition_occurrence SET person_id = 999999 WHERE condition_occurrence_id = 1",
    ),
    (
        "foreignKey",
        "episode_event",
        "episode_id",
        False,
        "UPDATE episode_event SET episode_id = 999999 WHERE event_id = 1",
    ),
    (
        "isForeignKey",
        "person",
        "gender_concept_id",
        False,
        "UPDATE person SET gender_concept_id = 123456 WHERE person_id = 1",
    ),
    (
        "fkDomain",
        "person",
        "gender_concept_id",
        False,
        "INSERT INTO concept VALUES (42, 'A condition', 'Condition', 'None', 'Undefined', 'S', "
        "'X', "
        "DATE '1970-01-01', DATE '2099-12-31', NULL); "
        "UPDATE person SET gender_concept_id = 42 WHERE person_id = 1",
    ),
    (
        "plausibleTemporalAfter",
        "drug_exposure",
        "drug_exposure_end_date",
        False,
        "UPDATE drug_exposure SET drug_exposure_end_date = drug_exposure_start_date - 1 "
        "WHERE drug_exposure_id = 1",
    ),
    (
        "plausibleTemporalAfter",
        "condition_occurrence",
        "condition_start_date",
        False,
        "UPDATE condition_occurrence SET condition_start_date = DATE '1900-01-01' "
        "WHERE condition_occurrence_id = 1",
    ),
    (
        "plausibleDuringObservation",
        "specimen",
        "specimen_date",
        False,
        "UPDATE specimen SET specimen_date = DATE '2199-01-01' WHERE specimen_id = 1",
    ),
    (
        "plausibleValueLow",
        "person",
        "year_of_birth",
        False,
        "UPDATE person SET year_of_birth = 1700 WHERE person_id = 2",
    ),
    ("isRequired", "observation_period", "", False, "DELETE FROM observation_period"),
    ("cdmTable", "specimen", "", False, "DROP TABLE specimen"),
]


@pytest.mark.parametrize(
    ("check", "table", "field", "loosen", "sql"),
    BREAKS,
    ids=[f"{b[0]}-{b[1]}.{b[2]}" for b in BREAKS],
)
def test_each_check_reports_a_broken_copy(
    cdm: Path, tmp_path: Path, check: str, table: str, field: str, loosen: bool, sql: str
) -> None:
    """Break one row of a copy: the check names that table and field; the original passes."""
    broken = tmp_path / "broken.duckdb"
    shutil.copy(cdm, broken)
    with duckdb.connect(str(broken)) as con:
        if loosen:
            _loosen(con, table)
        con.execute(sql)
    assert not [r for r in run_checks(cdm, tables={table}) if r.failed]
    failed = {(r.check, r.table, r.field) for r in run_checks(broken, tables={table}) if r.failed}
    assert (check, table, field) in failed


def test_vocabulary_gives_concept_ids(synth_store: Path, tmp_path: Path) -> None:
    """With an Athena folder (a made-up fixture), concept ids come from it: ICD-O-3 through
    'Maps to' to a Condition concept, gender, type, drugs, units, episodes; a code whose map
    lands outside the Condition domain keeps 0; the DQD checks still all pass."""
    with duckdb.connect(str(synth_store), read_only=True) as s:
        codes = [
            r[0]
            for r in s.execute(
                "SELECT DISTINCT morphology || '/' || behaviour || '-' || topography AS c "
                "FROM tumour ORDER BY c LIMIT 3"
            ).fetchall()
        ]
        imatinib = s.execute(
            "SELECT count(*) FROM treatment WHERE agent = 'imatinib' AND start_date IS NOT NULL"
        ).fetchone()
    domains = {codes[0]: "Condition", codes[1]: "Condition", codes[2]: "Observation"}
    ids = write_athena(tmp_path / "athena", domains)
    out = tmp_path / "cdm.duckdb"
    summary = export(synth_store, out, vocab=tmp_path / "athena")
    assert not any("concept id is 0" in n for n in summary.notes)
    assert failures(run_checks(out)) == []
    with duckdb.connect(str(out), read_only=True) as c:
        rows = dict(
            ((r[0], r[1]), r[2])
            for r in c.execute(
                "SELECT condition_source_value, condition_concept_id, condition_source_concept_id "
                "FROM condition_occurrence"
            ).fetchall()
        )
        assert rows[(codes[0], ids[f"std:{codes[0]}"])] == ids[f"icdo3:{codes[0]}"]
        assert rows[(codes[1], ids[f"std:{codes[1]}"])] == ids[f"icdo3:{codes[1]}"]
        assert rows[(codes[2], 0)] == ids[f"icdo3:{codes[2]}"]
        genders = dict(
            c.execute(
                "SELECT DISTINCT gender_source_value, gender_concept_id FROM person"
            ).fetchall()
        )
        assert genders.get("male", ids["male"]) == ids["male"]
        assert genders.get("female", ids["female"]) == ids["female"]
        assert c.execute(
            "SELECT DISTINCT condition_type_concept_id FROM condition_occurrence"
        ).fetchall() == [(ids["registry"],)]
        n_imatinib = c.execute(
            "SELECT count(*) FROM drug_exposure WHERE drug_concept_id = ?", [ids["imatinib"]]
        ).fetchone()
        assert n_imatinib == imatinib
        first = c.execute(
            "SELECT DISTINCT episode_concept_id FROM episode WHERE episode_number = 1 "
            "AND episode_parent_id IS NULL "
            "AND episode_id <= (SELECT count(*) FROM condition_occurrence)"
        ).fetchall()
        assert first == [(ids["first"],)]
        fields = {
            r[0]
            for r in c.execute(
                "SELECT DISTINCT episode_event_field_concept_id FROM episode_event"
            ).fetchall()
        }
        assert {ids["f_cond"], ids["f_drug"], ids["f_proc"]} <= fields
        units = dict(
            c.execute(
                "SELECT DISTINCT unit_source_value, unit_concept_id FROM measurement "
                "WHERE unit_source_value IS NOT NULL"
            ).fetchall()
        )
        assert (
            units.get("%", ids["pct"]) == ids["pct"]
            and units.get("10^9/L", ids["giga"]) == ids["giga"]
        )
        src = c.execute(
            "SELECT cdm_version_concept_id, vocabulary_version FROM cdm_source"
        ).fetchone()
        assert src == (ids["cdm54"], "TEST-FIXTURE v1")


def test_a_broken_vocabulary_folder_is_named(synth_store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "athena"
    write_athena(folder, {})
    (folder / "CONCEPT_RELATIONSHIP.csv").unlink()
    with pytest.raises(VocabularyError, match=r"CONCEPT_RELATIONSHIP\.csv: missing"):
        export(synth_store, tmp_path / "a.duckdb", vocab=folder)
    write_athena(folder, {})
    text = (folder / "CONCEPT.csv").read_text().replace("concept_code\t", "code\t", 1)
    (folder / "CONCEPT.csv").write_text(text)
    with pytest.raises(VocabularyError, match=r"CONCEPT\.csv: column\(s\) concept_code missing"):
        export(synth_store, tmp_path / "b.duckdb", vocab=folder)


def test_details_of_a_small_store(tmp_path: Path) -> None:
    """Month-precision birth keeps no day; a relapse is a recurrence episode whose event is its
    bone-marrow blasts; a treatment without a start date is reported, not written."""
    store = build_store(
        tmp_path / "s.duckdb",
        {
            "patient": [
                {
                    "patient_id": "P1",
                    "sex": "female",
                    "birth_date": date(2010, 6, 15),
                    "birth_date_precision": "month",
                    "country": "FR",
                    "vital_status": "alive",
                    "last_contact_date": date(2020, 1, 1),
                },
            ],
            "tumour": [
                {
                    "tumour_id": "T1",
                    "patient_id": "P1",
                    "diagnosis_date": date(2014, 3, 2),
                    "topography": "C42.1",
                    "morphology": "9836",
                    "behaviour": 3,
                    "wbc_at_diagnosis": 12.5,
                    "risk_group": "standard",
                },
            ],
            "event": [
                {
                    "event_id": "E1",
                    "tumour_id": "T1",
                    "event_type": "relapse",
                    "event_date": date(2017, 5, 1),
                    "relapse_site": "bone_marrow",
                    "bm_blasts_pct": 40.0,
                },
            ],
            "treatment": [
                {
                    "treatment_id": "X1",
                    "tumour_id": "T1",
                    "type": "chemotherapy",
                    "protocol": "AIEOP-BFM ALL 2017",
                    "start_date": date(2014, 3, 5),
                    "end_date": date(2016, 3, 1),
                },
                {
                    "treatment_id": "X2",
                    "tumour_id": "T1",
                    "type": "hsct",
                    "agent": "allogeneic HSCT",
                },
            ],
        },
    )
    out = tmp_path / "cdm.duckdb"
    done: list[int] = []
    with NodeStore(store) as ns:  # a store open for writing exports too
        summary = omop.export_store(ns, out, progress=done.append)
    assert done == sorted(done) and done[-1] == 1 and summary.patients == 1
    with duckdb.connect(str(out), read_only=True) as c:
        warned = c.execute(
            "SELECT value_as_string FROM metadata WHERE name = 'ccdp export warning'"
        )
        assert warned.fetchall() == [(summary.warnings[0],)]
    assert summary.warnings == [
        "1 treatments without a start date not exported (OMOP requires the date)"
    ]
    assert failures(run_checks(out)) == []
    with duckdb.connect(str(out), read_only=True) as c:
        assert c.execute(
            "SELECT year_of_birth, month_of_birth, day_of_birth FROM person"
        ).fetchone() == (2010, 6, None)
        assert c.execute("SELECT condition_source_value FROM condition_occurrence").fetchone() == (
            "9836/3-C42.1",
        )
        assert c.execute(
            "SELECT observation_period_start_date, observation_period_end_date "
            "FROM observation_period"
        ).fetchone() == (date(2014, 3, 2), date(2020, 1, 1))
        relapse = c.execute(
            "SELECT e.episode_parent_id, e.episode_number, e.episode_source_value, "
            "m.value_as_number, m.measurement_source_value "
            "FROM episode e JOIN episode_event ee USING (episode_id) "
            "JOIN measurement m ON m.measurement_id = ee.event_id "
            "WHERE e.episode_start_date = DATE '2017-05-01'"
        ).fetchall()
        assert relapse == [(1, 1, "relapse: bone_marrow", 40.0, "bone marrow blasts")]
        regimen = c.execute(
            "SELECT episode_source_value, episode_end_date FROM episode "
            "WHERE episode_source_value LIKE 'AIEOP%'"
        ).fetchall()
        assert regimen == [("AIEOP-BFM ALL 2017", date(2016, 3, 1))]
        assert c.execute("SELECT count(*) FROM procedure_occurrence").fetchone() == (0,)
        wbc = c.execute(
            "SELECT value_as_number, unit_source_value FROM measurement "
            "WHERE measurement_source_value = 'WBC at diagnosis'"
        ).fetchone()
        assert wbc == (12.5, "10^9/L")


def test_same_store_same_rows(synth_store: Path, cdm: Path, tmp_path: Path) -> None:
    """Ids are ranks of store keys: a second export holds exactly the same rows."""
    again = tmp_path / "again.duckdb"
    export(synth_store, again)
    with (
        duckdb.connect(str(cdm), read_only=True) as a,
        duckdb.connect(str(again), read_only=True) as b,
    ):
        for table in sorted(FILLED):
            sql = f"SELECT * FROM {table} ORDER BY ALL"
            assert a.execute(sql).fetchall() == b.execute(sql).fetchall(), table


def test_command_writes_and_refuses_to_overwrite(synth_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "cdm.duckdb"
    args = ("export", "omop", "--store", synth_store, "--out", out)
    manifest = json.loads(run_ccdp(*args, "--json").stdout)
    assert manifest["format"] == "omop" and manifest["records"]["person"] == 300
    assert out.is_file() and (tmp_path / "cdm.duckdb.ccdp-export.json").is_file()
    assert failures(run_checks(out)) == []
    again = run_ccdp(*args, check=False)
    assert again.returncode != 0 and "--replace" in again.stdout + again.stderr
    write_athena(tmp_path / "athena", {})
    replaced = json.loads(
        run_ccdp(*args, "--replace", "--json", "--vocab", tmp_path / "athena").stdout
    )
    assert any(n.startswith("Vocabulary loaded from") for n in replaced["notes"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with duckdb.connect(str(out), read_only=True) as c:
        assert c.execute("SELECT vocabulary_version FROM cdm_source").fetchone() == (
            "TEST-FIXTURE v1",
        )
