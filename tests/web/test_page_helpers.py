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


def test_method_words_say_exact_or_perturbed_with_the_bounds():
    from ccdp.web.feasibility import method_words

    assert method_words(None)["kind"] == "exact"
    assert method_words({"counts": "exact"})["text"].startswith("exact")
    method = {"counts": "perturbed", "max_noise": 4, "pooled_max_noise": 12, "perturbed_nodes": 3}
    text = method_words(method, 1, 3)["text"]
    assert text.startswith("perturbed: each country's count is within ±4 of the truth")
    assert "the total within ±12" in text
    # two nodes in a country: its count is the sum of theirs; one of three nodes perturbed
    assert "within ±8" in method_words(method, 2, 4)["text"]
    some = {**method, "perturbed_nodes": 1, "pooled_max_noise": 4}
    assert method_words(some, 1, 3)["text"].startswith("perturbed at 1 of the 3 nodes")


def test_the_project_form_builds_the_project_and_names_what_it_cannot_read():
    from ccdp.web.projectform import build_project, own_studies

    form = {
        "title": ["T"],
        "summary": ["S"],
        "institution": ["I"],
        "permission": ["DS"],
        "analyses": ["km"],
        "nodes": ["FR"],
        "expires": ["2030-01-01"],
        "studies_yaml": ["title: a\nanalysis: km\n---\n- {title: b, analysis: km}\n"],
        "copy": ["p1:0"],
    }
    mine = own_studies([{"project_id": "p1", "title": "P", "studies": [{"spec": {"x": 1}}]}])
    built = build_project(form, mine)
    assert built.problems == []
    assert built.spec["data_use"] == {
        "permission": "DS",
        "commercial": False,
        "disease": "MONDO:0004992",
    }
    assert [s.get("title") for s in built.spec["studies"]] == [None, "a", "b"]
    bad = build_project({**form, "studies_yaml": ["[unclosed"], "copy": ["gone:3"]}, mine)
    assert any("not valid YAML" in p for p in bad.problems)
    assert any("no longer there" in p for p in bad.problems)
    empty = build_project({}, [])
    assert {"Title: required.", "Expires: a date (YYYY-MM-DD)."} <= set(empty.problems)
