"""Cohort spec: OR within a field, AND across fields, ranges, typed values, no injection."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from ccdp.cohort.spec import CohortError, CohortSpec
from ccdp.cohort.view import cohort_sql
from tests.storekit import build_store, random_registry


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(
        tmp_path_factory.mktemp("spec") / "s.duckdb", random_registry(3, 300, "FR", "x")
    )


def select(store, spec: dict) -> pd.DataFrame:
    where, params = CohortSpec.load(spec).compile()
    con = duckdb.connect()
    con.execute(f"ATTACH '{store}' AS store (READ_ONLY)")
    try:
        return con.execute(cohort_sql(None, where), ["n", *params]).df()
    finally:
        con.close()


def test_or_and_range(store):
    everything = select(store, {})
    got = select(
        store,
        {"iccc_group": ["I", "III"], "diagnosis_year": {"from": 2007, "to": 2010}, "sex": "female"},
    )
    expect = everything[
        everything.iccc_group.isin(["I", "III"])
        & everything.diagnosis_year.between(2007, 2010)
        & (everything.sex == "female")
    ]
    assert len(got) > 0
    assert sorted(got.tumour_id) == sorted(expect.tumour_id)


def test_open_range_and_typed_values(store):
    everything = select(store, {})
    got = select(store, {"age_group": [0, "1-4"], "age_at_diagnosis": {"to": 3.5}})
    expect = everything[
        everything.age_group.isin(["0", "1-4"]) & (everything.age_at_diagnosis <= 3.5)
    ]
    assert sorted(got.tumour_id) == sorted(expect.tumour_id)


def test_null_in_list_selects_missing(store):
    everything = select(store, {})
    got = select(store, {"arm": ["a", None]})
    expect = everything[(everything.arm == "a") | everything.arm.isna()]
    assert sorted(got.tumour_id) == sorted(expect.tumour_id)


def test_unknown_variable_gets_a_did_you_mean():
    with pytest.raises(CohortError, match=r"unknown cohort variable 'iccc'.*iccc_group"):
        CohortSpec.load({"iccc": "I"})


def test_identifiers_cannot_be_filtered():
    with pytest.raises(CohortError, match="'patient_id' is an identifier: identifiers never"):
        CohortSpec.load({"patient_id": "P1"})


def test_coded_values_are_checked_against_their_levels():
    assert CohortSpec.load({"sex": ["Male"], "iccc_group": "ix"}).to_json() == {
        "sex": ["male"],
        "iccc_group": "IX",
    }
    with pytest.raises(CohortError, match="'XX' is not one of its levels"):
        CohortSpec.load({"country": ["FR", "XX"]})
    with pytest.raises(CohortError, match=r"not a integer|not a finite"):
        CohortSpec.load({"diagnosis_year": {"from": 1e400}})


def test_bad_value_type_named():
    with pytest.raises(CohortError, match="diagnosis_year"):
        CohortSpec.load({"diagnosis_year": "recent"})


def test_injection_is_only_ever_a_value(store):
    evil = "I') OR 1=1; DROP TABLE tumour; --"
    with pytest.raises(CohortError, match="not one of its levels"):  # a coded variable
        CohortSpec.load({"iccc_group": evil})
    where, params = CohortSpec.load({"stage": evil}).compile()  # a free-text one: a value
    assert evil not in where and params == [evil]
    assert len(select(store, {"stage": evil})) == 0
    assert len(select(store, {})) == 300  # nothing dropped
    with pytest.raises(CohortError):
        CohortSpec.load({'sex" = sex OR "1': "x"})
