"""The edit definitions: valid data, complete coverage of the model, SQL that runs."""

from __future__ import annotations

import json

import pytest

from ccdp.model import load_model
from ccdp.quality.edits import Edit, load_edits, reference_table
from ccdp.quality.engine import template_sql


def test_edits_load_with_unique_ids_and_known_fields() -> None:
    edits = load_edits()
    assert len({e.id for e in edits}) == len(edits)
    systems = {f.code_system for t in load_model().tables.values() for f in t.fields}
    assert systems - {None} == {e.code_system for e in edits if e.check == "code"}
    for e in edits:
        if e.check == "sql":
            assert e.id.split(".")[0] in (e.table, e.table.split("_")[0])
            assert set(e.parents()) <= set(load_model().table_names)


def test_an_sql_edit_without_its_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="sql edits need table, field, when and message"):
        Edit(id="x", check="sql", severity="error", category="plausibility", description="d")
    with pytest.raises(KeyError, match="has no field 'nope'"):
        Edit(
            id="x",
            check="sql",
            severity="error",
            category="plausibility",
            description="d",
            table="patient",
            field="nope",
            when="true",
            message="m",
        )


def test_reference_tables_have_their_source_note_and_rows() -> None:
    sex_site = reference_table("sex_site")
    assert {r["impossible_sex"] for r in sex_site} == {"male", "female"}
    ages = reference_table("age_histology")
    assert {r["label"] for r in ages} >= {
        "retinoblastoma",
        "hepatoblastoma",
        "neuroblastoma",
        "Hodgkin lymphoma",
    }


def test_message_templates_compile_to_sql() -> None:
    import duckdb

    sql = template_sql("is before {DATE '2020-01-02'} and {NULL}")
    assert duckdb.sql(f"SELECT {sql}").fetchall()[0][0] == "is before 2020-01-02 and ?"


def test_docs_quality_edits_is_current(ccdp) -> None:
    from pathlib import Path

    from ccdp.quality.edits import edits_markdown

    committed = (Path(__file__).resolve().parents[2] / "docs" / "quality-edits.md").read_text(
        encoding="utf-8"
    )
    assert committed == edits_markdown(), "run `ccdp edits -o docs/quality-edits.md`"
    listed = json.loads(ccdp("edits", "--format", "json").stdout)
    assert {e["id"] for e in listed} == {e.id for e in load_edits()}
