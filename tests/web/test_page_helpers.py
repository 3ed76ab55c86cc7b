"""The Feasibility and Governance pages' pure helpers (no browser, no partnership)."""

from __future__ import annotations

from ccdp.web.feasibility import Filters, count_projects, count_table, study_spec
from ccdp.web.governance import data_use_words, scope_words

NODES = [
    {"name": "FR", "country": "FR"},
    {"name": "DE", "country": "DE"},
    {"name": "KE", "country": "KE"},
]


def study(cells, total, suppressed, statuses):
    return {
        "status": "done",
        "result": {
            "nodes": statuses,
            "result": {
                "unit": "patients",
                "cells": cells,
                "total": total,
                "suppressed_cells": suppressed,
                "unlisted_cells": 0,
            },
        },
    }


def test_filters_make_a_count_spec_by_country():
    f = Filters.of(
        {
            "iccc_group": ["I"],
            "age_group": ["1-4", "5-9"],
            "sex": ["female"],
            "relapsed": ["1"],
            "year_from": ["2005"],
            "year_to": [""],
            "unit": ["tumours"],
        }
    )
    spec = study_spec(f, "p1")
    assert spec["analysis"] == "count" and spec["by"] == ["country"]
    assert spec["unit"] == "tumours" and spec["project"] == "p1" and spec["min_nodes"] == 1
    assert spec["cohort"] == {
        "iccc_group": ["I"],
        "age_group": ["1-4", "5-9"],
        "sex": "female",
        "relapsed": 1,
        "diagnosis_year": {"from": 2005},
    }
    from ccdp.federation.study import load_study

    load_study(spec)  # a valid study spec


def test_bad_years_are_problems_not_a_cohort():
    _, problems = Filters.of({"year_from": ["20x5"]}).cohort()
    assert problems and "not a year" in problems[0]
    _, problems = Filters.of({"year_from": ["2010"], "year_to": ["2000"]}).cohort()
    assert "after the last" in problems[0]


def test_total_shown_only_when_no_cell_is_suppressed():
    answered = {n["name"]: {"status": "answered", "reason": None} for n in NODES}
    cells = [
        {"country": "FR", "n": 12, "suppressed": False},
        {"country": "DE", "n": None, "suppressed": True},
        {"country": "KE", "n": 30, "suppressed": False},
    ]
    t = count_table(study(cells, 45, 1, answered), NODES)
    assert t["total"] is None and "worked out" in t["total_note"]
    de = next(r for r in t["rows"] if r["code"] == "DE")
    assert de["suppressed"] and de["count"] is None
    clean = [c | {"n": 5, "suppressed": False} for c in cells]
    assert count_table(study(clean, 15, 0, answered), NODES)["total"] == 15


def test_a_refusing_node_shows_its_reason():
    from ccdp.disclosure.refusals import TOO_FEW

    statuses = {
        "FR": {"status": "answered", "reason": None},
        "DE": {"status": "refused", "reason": f"{TOO_FEW}: below 10"},
        "KE": {"status": "answered", "reason": None},
    }
    cells = [
        {"country": "FR", "n": 12, "suppressed": False},
        {"country": "KE", "n": 30, "suppressed": False},
    ]
    t = count_table(study(cells, 42, 0, statuses), NODES)
    de = next(r for r in t["rows"] if r["code"] == "DE")
    assert de["cell"] is None and not de["answered"]
    assert de["nodes"][0]["label"] == TOO_FEW
    assert [r["name"] for r in t["rows"]] == sorted(r["name"] for r in t["rows"])


def test_count_projects_are_approved_ones_with_count_feasibility_first():
    ps = [
        {
            "project_id": "a",
            "title": "Survival",
            "state": "approved",
            "terms": {"analyses": ["km", "count"]},
        },
        {
            "project_id": "b",
            "title": "Feasibility counts",
            "state": "approved",
            "terms": {"analyses": ["count"]},
        },
        {
            "project_id": "c",
            "title": "Pending",
            "state": "requested",
            "terms": {"analyses": ["count"]},
        },
        {
            "project_id": "d",
            "title": "Cox only",
            "state": "approved",
            "terms": {"analyses": ["cox"]},
        },
    ]
    assert [p["project_id"] for p in count_projects(ps)] == ["b", "a"]


def test_data_use_and_scope_in_words():
    words = data_use_words(
        {"permission": "DS", "disease": "MONDO:0005059", "commercial": False, "meets": ["IRB"]}
    )
    assert words == (
        "disease specific research (DUO DS) on leukemia (MONDO:0005059), not commercial; "
        "meets: ethics approval required (IRB)"
    )
    assert data_use_words({"permission": "GRU"}).startswith("general research use (DUO GRU)")
    assert scope_words({"iccc_subgroup": ["Ia"], "diagnosis_year": {"from": 2000, "to": None}}) == (
        "iccc subgroup: Ia; diagnosis year: 2000 to …"
    )
    assert "no cohort restriction" in scope_words(None)
