"""The data model: its tables and fields, the DDL it generates and the dictionary it renders."""

from __future__ import annotations

import json

import duckdb
import pytest

from ccdp.model import load_model
from ccdp.model.dictionary import to_markdown
from tests.conftest import ROOT

REQUIRED_FIELDS = {
    "patient": [
        "patient_id",
        "sex",
        "birth_date",
        "country",
        "vital_status",
        "last_contact_date",
        "death_date",
        "cause_of_death",
        "consent",
    ],
    "tumour": [
        "tumour_id",
        "patient_id",
        "diagnosis_date",
        "topography",
        "morphology",
        "behaviour",
        "basis_of_diagnosis",
        "laterality",
        "immunophenotype",
        "wbc_at_diagnosis",
        "cns_status",
        "stage_system",
        "stage",
        "risk_group",
        "frontline_end_date",
    ],
    "event": ["event_id", "tumour_id", "event_type", "event_date", "relapse_site", "bm_blasts_pct"],
    "treatment": [
        "treatment_id",
        "tumour_id",
        "type",
        "agent",
        "protocol",
        "start_date",
        "end_date",
    ],
    "trial_enrolment": ["patient_id", "trial", "arm", "enrolment_date", "risk_group"],
    "biomarker": ["tumour_id", "marker", "value", "unit", "date"],
    "specimen": ["specimen_id", "tumour_id", "type", "collection_date", "available"],
    "population": ["country", "year", "sex", "age_group", "population"],
}


def test_every_required_table_and_field_is_defined():
    model = load_model()
    for table, fields in REQUIRED_FIELDS.items():
        assert set(fields) <= set(model.table(table).field_names), table


def test_allowed_values_match_the_issue():
    model = load_model()
    assert model.table("patient").field("sex").allowed == ["male", "female", "unknown"]
    assert model.table("tumour").field("behaviour").allowed == [0, 1, 2, 3, 6, 9]
    assert model.table("population").field("age_group").allowed == [
        "0",
        "1-4",
        "5-9",
        "10-14",
        "15-19",
    ]
    assert "car_t" in model.table("treatment").field("type").allowed


def test_ddl_creates_every_table_in_duckdb():
    model = load_model()
    con = duckdb.connect()
    for table in model.tables.values():
        con.execute(table.ddl())
        cols = [r[0] for r in con.execute(f'DESCRIBE "{table.name}"').fetchall()]
        assert cols == table.field_names
    types = {r[0]: r[1] for r in con.execute('DESCRIBE "tumour"').fetchall()}
    assert types["diagnosis_date"] == "DATE"
    assert types["wbc_at_diagnosis"] == "DOUBLE"


def test_unknown_table_names_the_choices():
    with pytest.raises(KeyError, match="tables: patient"):
        load_model().table("patients")


def test_generated_dictionary_is_not_stale():
    committed = (ROOT / "docs" / "data-dictionary.md").read_text(encoding="utf-8")
    assert committed.strip() == to_markdown().strip(), (
        "docs/data-dictionary.md is stale: run `ccdp dictionary --format md "
        "-o docs/data-dictionary.md`"
    )


def test_dictionary_cli_lists_every_field(ccdp):
    md = ccdp("dictionary", "--format", "md").stdout
    for table, fields in REQUIRED_FIELDS.items():
        assert f"## `{table}`" in md
        for f in fields:
            assert f"| `{f}` |" in md
    js = json.loads(ccdp("dictionary", "--format", "json").stdout)
    assert js["tables"]["event"]["fields"][2]["allowed"][1] == "relapse"
