"""The analysis view on a hand-made store whose answers are worked out by hand."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from ccdp.cohort.view import cohort_sql, view_columns, view_variables
from tests.storekit import build_store


def _tumour(tid: str, pid: str, diag: date, **kw) -> dict:
    return {
        "tumour_id": tid,
        "patient_id": pid,
        "diagnosis_date": diag,
        "topography": "C42.1",
        "morphology": "9836",
        "behaviour": 3,
        "iccc_group": "I",
        "iccc_subgroup": "Ia",
        **kw,
    }


def _patient(pid: str, birth: date, last: date, vital: str = "alive", death=None) -> dict:
    return {
        "patient_id": pid,
        "sex": "female",
        "birth_date": birth,
        "country": "FR",
        "vital_status": vital,
        "last_contact_date": last,
        "death_date": death,
    }


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    store = build_store(
        tmp_path_factory.mktemp("view") / "hand.duckdb",
        {
            "patient": [
                _patient("A", date(2000, 6, 15), date(2007, 6, 14), "dead", date(2007, 6, 14)),
                _patient("B", date(2010, 1, 1), date(2015, 6, 1)),
                _patient("C", date(1995, 3, 1), date(2016, 1, 1)),
                _patient("D", date(2008, 1, 1), date(2012, 6, 1), "dead"),
                _patient("E", date(2001, 1, 1), date(2014, 1, 1)),
            ],
            "tumour": [
                _tumour("tA", "A", date(2005, 6, 14), wbc_at_diagnosis=12.5, risk_group="high"),
                _tumour("tB", "B", date(2010, 6, 1)),
                _tumour("tC", "C", date(2012, 3, 1), frontline_end_date=date(2014, 3, 1)),
                _tumour("tD", "D", date(2010, 1, 1)),
                _tumour("tE", "E", date(2011, 1, 1)),
            ],
            "event": [
                {
                    "event_id": "1",
                    "tumour_id": "tA",
                    "event_type": "relapse",
                    "event_date": date(2006, 1, 1),
                    "relapse_site": "cns",
                },
                {
                    "event_id": "2",
                    "tumour_id": "tC",
                    "event_type": "relapse",
                    "event_date": date(2011, 1, 1),
                },  # before diagnosis: ignored
                {
                    "event_id": "3",
                    "tumour_id": "tC",
                    "event_type": "relapse",
                    "event_date": date(2015, 1, 1),
                    "relapse_site": "bone_marrow",
                },
                {
                    "event_id": "4",
                    "tumour_id": "tC",
                    "event_type": "progression",
                    "event_date": date(2015, 6, 1),
                },
                {
                    "event_id": "5",
                    "tumour_id": "tD",
                    "event_type": "relapse",
                    "event_date": date(2012, 1, 1),
                },
                {
                    "event_id": "6",
                    "tumour_id": "tE",
                    "event_type": "remission",
                    "event_date": date(2011, 2, 1),
                },
                {
                    "event_id": "7",
                    "tumour_id": "tE",
                    "event_type": "second_malignancy",
                    "event_date": date(2013, 1, 1),
                },
            ],
            "trial_enrolment": [
                {
                    "patient_id": "B",
                    "trial": "LATER",
                    "arm": "x",
                    "enrolment_date": date(2010, 7, 1),
                },
                {
                    "patient_id": "B",
                    "trial": "EARLY",
                    "arm": "y",
                    "enrolment_date": date(2010, 6, 5),
                    "risk_group": "standard",
                },
            ],
        },
    )
    con = duckdb.connect()
    con.execute(f"ATTACH '{store}' AS store (READ_ONLY)")
    frame = con.execute(cohort_sql(None, "TRUE"), ["nodeX"]).df()
    con.close()
    return frame.set_index("tumour_id", drop=False)


def test_columns_are_the_documented_variables(view):
    assert list(view.columns) == view_columns("tumours")
    specimen = [n for n, v in view_variables().items() if v.rows == "specimens"]
    assert specimen == ["specimen_id", "specimen_type"]
    assert view_columns("specimens") == list(view_variables())


def test_ages(view):
    assert view.loc["tA", "age_years"] == 4 and view.loc["tA", "age_group"] == "1-4"
    assert view.loc["tA", "age_at_diagnosis"] == pytest.approx(1825 / 365.25)
    assert view.loc["tB", "age_group"] == "0"
    assert view.loc["tC", "age_years"] == 17 and view.loc["tC", "age_group"] == "15-19"
    assert view.loc["tD", "age_group"] == "1-4"
    assert view.loc["tE", "age_group"] == "10-14"


def test_overall_survival(view):
    assert (view.loc["tA", "os_time"], view.loc["tA", "os_event"]) == (730, 1)
    assert (view.loc["tB", "os_time"], view.loc["tB", "os_event"]) == (1826, 0)
    # dead without a death date: death at last contact
    assert (view.loc["tD", "os_time"], view.loc["tD", "os_event"]) == (882, 1)


def test_event_free_survival(view):
    assert (view.loc["tA", "efs_time"], view.loc["tA", "efs_event"]) == (201, 1)
    assert (view.loc["tB", "efs_time"], view.loc["tB", "efs_event"]) == (1826, 0)
    # the relapse dated before diagnosis is ignored
    assert (view.loc["tC", "efs_time"], view.loc["tC", "efs_event"]) == (1036, 1)
    # remission is not an event; the second malignancy is
    assert (view.loc["tE", "efs_time"], view.loc["tE", "efs_event"]) == (731, 1)


def test_relapse_variables(view):
    a, c, d = view.loc["tA"], view.loc["tC"], view.loc["tD"]
    assert a["relapse_timing"] == "very_early" and a["relapse_site"] == "cns"
    assert c["relapse_timing"] == "late" and c["relapse_site"] == "bone_marrow"
    assert d["relapse_timing"] == "early"  # 24 months, no front-line end: BFM 2-year default
    assert (a["relapse_os_time"], a["relapse_os_event"]) == (529, 1)
    assert (c["relapse_efs_time"], c["relapse_efs_event"]) == (151, 1)
    assert (c["relapse_os_time"], c["relapse_os_event"]) == (365, 0)
    assert c["time_to_relapse"] == 1036 and a["relapsed"] == 1
    assert view.loc["tB", "relapsed"] == 0
    assert view.loc["tB", "relapse_timing"] is None or view["relapse_timing"].isna()["tB"]


def test_trial_and_other_columns(view):
    b = view.loc["tB"]
    assert (b["trial"], b["arm"], b["risk_group"]) == ("EARLY", "y", "standard")
    assert view.loc["tA", "risk_group"] == "high" and view.loc["tA", "wbc_at_diagnosis"] == 12.5
    assert set(view["node"]) == {"nodeX"}
    assert view.loc["tA", "diagnosis_period"] == "2005-2009"
    assert view.loc["tC", "diagnosis_year"] == 2012


def test_docs_are_generated_from_the_dictionary(ccdp):
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "analysis-view.md"
    assert doc.read_text().rstrip("\n") == ccdp("cohort", "variables").stdout.rstrip("\n")
    import json

    names = [v["name"] for v in json.loads(ccdp("cohort", "variables", "--format", "json").stdout)]
    assert names == list(view_variables())


def test_followup_band_cuts_os_time_at_1_3_5_years(view):
    """The band a feasibility count may use instead of os_time (docs/feasibility.md)."""
    assert view.loc["tA", "os_time"] == 730 and view.loc["tA", "followup_band"] == "1-3y"
    for os_time, band in zip(view["os_time"], view["followup_band"], strict=True):
        years = os_time / 365.25
        expected = "0-1y" if years < 1 else "1-3y" if years < 3 else "3-5y" if years < 5 else "5y+"
        assert band == expected
