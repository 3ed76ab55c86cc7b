"""Summaries as received: malformed parts refused by `Summary.from_dict`, parts of the wrong
shape for their analysis by `check_summary`, each with a message naming part and field."""

from __future__ import annotations

import pytest

from ccdp.analyses import registry
from ccdp.wire.errors import MalformedSummary
from ccdp.wire.summary import Summary

TABLE = {
    "kind": "event_times",
    "group_by": ["sex"],
    "group_sizes": {"F": 2},
    "columns": {
        "group": ["F", "F"],
        "time": [1.0, 2.0],
        "start": [1.0, 2.0],
        "events": [1, 0],
        "censored": [0, 1],
    },
}


@pytest.mark.parametrize(
    ("part", "why"),
    [
        ({"kind": ["counts"]}, "unknown kind ['counts']"),
        ({"kind": "aggregate", "n": True, "n_params": 1, "values": {}}, "n must be a whole"),
        ({"kind": "aggregate", "n": 4, "n_params": -1, "values": {}}, "n_params must be"),
        ({"kind": "aggregate", "n": 4, "n_params": 1, "values": [1.0]}, "values must be a map"),
        ({**TABLE, "group_sizes": {"F": -2}}, "group_sizes['F'] must be a whole number"),
        ({"kind": "counts", "dims": "sex", "counts": ["n"], "cells": []}, "dims must be a list"),
        ({"kind": "counts", "dims": [], "counts": ["n"], "cells": [], "withheld": -1}, "withheld"),
    ],
)
def test_malformed_parts_are_refused_naming_the_field(part, why):
    with pytest.raises(MalformedSummary, match="summary part 's'") as err:
        Summary.from_dict({"s": part})
    assert why in str(err.value)


def km(summary: dict, by: list[str] | None = None, request: dict | None = None) -> None:
    analysis = registry.get("km")
    params = analysis.params_model.model_validate({"outcome": "os", "by": by or ["sex"]})
    analysis.check_summary(Summary.from_dict(summary), params, request or {})


def test_an_event_table_of_the_right_shape_passes_and_others_are_refused():
    km({"events": TABLE})
    with pytest.raises(MalformedSummary, match="group_by must be"):
        km({"events": TABLE}, by=["iccc_group"])
    with pytest.raises(
        MalformedSummary, match="columns must be censored, events, group, start, time"
    ):
        km({"events": {**TABLE, "columns": {**TABLE["columns"], "extra": [1, 2]}}})
    with pytest.raises(MalformedSummary, match="'events' must hold whole numbers >= 0"):
        km({"events": {**TABLE, "columns": {**TABLE["columns"], "events": [-1, 0]}}})
    with pytest.raises(MalformedSummary, match="lacks part"):
        km({"other": TABLE})


def test_cox_risk_sets_must_have_one_moment_block_per_row():
    cox = registry.get("cox")
    params = cox.params_model.model_validate(
        {"outcome": "os", "covariates": ["age_years"], "strata": "none", "ties": "breslow"}
    )
    model = {"kind": "aggregate", "n": 10, "n_params": 1, "values": {}}
    columns = {"group": ["all"], "time": [1.0], "start": [1.0], "d": [1]}
    columns |= {"a": [[1.0, 2.0, 4.0]], "sx": [[2.0]]}
    table = {**TABLE, "group_by": [], "group_sizes": {"all": 10}, "columns": columns}
    step = {"step": "fit", "beta": [0.1]}
    cox.check_summary(Summary.from_dict({"model": model, "risk_sets": table}), params, step)
    short = {**table, "columns": {**columns, "a": [[1.0, 2.0]]}}
    with pytest.raises(MalformedSummary, match=r"'a' has .* values per row, expected 3"):
        cox.check_summary(Summary.from_dict({"model": model, "risk_sets": short}), params, step)
