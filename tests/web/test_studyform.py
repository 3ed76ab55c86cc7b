"""The New study form's fields to the spec it submits (no browser, no hub)."""

from __future__ import annotations

import yaml

from ccdp.federation.study import load_study
from ccdp.web.studyform import build_spec, form_of_spec, iccc_groups

NODES = ["DE", "FR", "KE"]


def test_a_km_form_gives_the_spec_with_only_the_parameters_km_takes():
    form = {
        "title": ["OS by country"],
        "analysis": ["km"],
        "project": ["p1"],
        "outcome": ["os"],
        "by": ["country, sex"],
        "covariates": ["arm"],  # not a km parameter
        "iccc_group": ["I", "II"],
        "age_from": ["0"],
        "age_to": ["14"],
        "sex": ["any"],
        "relapsed": ["1"],
        "nodes": NODES,
    }
    built = build_spec(form, NODES)
    assert built.spec == {
        "title": "OS by country",
        "analysis": "km",
        "project": "p1",
        "outcome": "os",
        "by": ["country", "sex"],
        "cohort": {"iccc_group": ["I", "II"], "relapsed": [1], "age_years": {"from": 0, "to": 14}},
    }
    assert built.notes == ["covariates is not a parameter of km: left out"]
    assert built.problems == []
    assert yaml.safe_load(built.yaml()) == built.spec
    load_study(built.spec)  # a spec the hub's first check takes


def test_cox_strata_extra_yaml_chosen_nodes_and_what_stops_a_submission():
    form = {
        "analysis": ["cox"],
        "outcome": ["efs"],
        "covariates": ["arm"],
        "strata": ["node"],
        "extra": ["ties: breslow"],
        "nodes": ["DE", "FR"],
        "min_nodes": ["2"],
        "year_from": ["2005"],
    }
    built = build_spec(form, NODES)
    assert built.spec["strata"] == "node" and built.spec["ties"] == "breslow"
    assert built.spec["nodes"] == ["DE", "FR"] and built.spec["min_nodes"] == 2
    assert built.spec["cohort"] == {"diagnosis_year": {"from": 2005}}
    assert built.spec["title"] == "untitled study"
    assert build_spec({**form, "strata": ["sex, country"]}, NODES).spec["strata"] == [
        "sex",
        "country",
    ]
    assert build_spec({**form, "nodes": []}, NODES).problems == ["nodes: choose at least one node"]
    assert "not YAML" in build_spec({**form, "extra": ["ties: [x"]}, NODES).problems[0]
    clash = build_spec({**form, "extra": ["outcome: os"]}, NODES).problems
    assert clash == ["other parameters: outcome already set by the form"]


def test_form_of_a_spec_round_trips_and_the_iccc_groups_are_in_order():
    spec = {"title": "t", "analysis": "km", "outcome": "os", "by": ["country"], "project": "p"}
    assert build_spec(form_of_spec(spec, NODES), NODES).spec == spec
    codes = [g for g, _ in iccc_groups()]
    assert codes[:4] == ["I", "II", "III", "IV"] and codes[-1] == "XII"
    assert iccc_groups()[4] == ("V", "Retinoblastoma")


def test_a_specimen_crosstab_takes_its_unit_and_a_km_leaves_it_out():
    form = {
        "title": ["Samples by type and node"],
        "analysis": ["crosstab"],
        "by": ["specimen_type, node"],
        "unit": ["specimens"],
        "iccc_group": ["I"],
        "nodes": NODES,
    }
    built = build_spec(form, NODES)
    assert built.spec["unit"] == "specimens"
    assert built.spec["by"] == ["specimen_type", "node"]
    assert built.problems == [] and built.notes == []
    load_study(built.spec)
    assert form_of_spec(built.spec, NODES)["unit"] == ["specimens"]
    km = build_spec({**form, "analysis": ["km"], "outcome": ["os"], "by": ["sex"]}, NODES)
    assert "unit" not in km.spec
    assert km.notes == ["unit is not a parameter of km: left out"]
