"""The registry finds every analysis by name; unknown names fail with the known list."""

from __future__ import annotations

import pytest

from ccdp.analyses import registry
from ccdp.analyses.base import Analysis, AnalysisParams
from ccdp.wire.errors import AnalysisError


def test_names_and_instances() -> None:
    names = registry.names()
    assert {"km", "logrank", "cox", "logistic", "poisson"} <= set(names)
    for name in names:
        analysis = registry.get(name)
        assert isinstance(analysis, Analysis) and analysis.name == name
        assert issubclass(analysis.params_model, AnalysisParams)


def test_unknown_analysis() -> None:
    with pytest.raises(AnalysisError, match=r"unknown analysis 'kaplan'.*km"):
        registry.get("kaplan")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("cox", {"covariates": ["arm"], "by": ["arm"]}),
        ("km", {"covariates": ["arm"]}),
        ("cox", {"covariates": ["arm"], "ties": "exact"}),
        ("km", {"time_unit": "year"}),
        ("logrank", {"by": []}),
        ("cox", {"covariates": ["a"], "strata": ["sex", "sex"]}),
    ],
)
def test_parameter_models_refuse_unknown_or_bad_keys(name: str, params: dict) -> None:
    with pytest.raises(ValueError):
        registry.get(name).params_model.model_validate(params)


def test_every_analysis_declares_its_result_model() -> None:
    """A result read back from JSON is rebuilt as its analysis's own type, not guessed."""
    from ccdp.analyses.base import AnalysisResult

    models = {name: registry.get(name).result_model for name in registry.names()}
    assert all(issubclass(m, AnalysisResult) and m is not AnalysisResult for m in models.values())
    assert models["crosstab"].__name__ == "CrosstabResult"
    assert models["count"].__name__ == "CountResult"


def test_a_crosstab_result_is_rebuilt_as_a_crosstab() -> None:
    from ccdp.federation.client import study_result

    raw = {
        "analysis": "crosstab",
        "by": ["sex"],
        "unit": "tumours",
        "total": 12,
        "suppressed_cells": 0,
        "cells": [{"sex": "F", "n": 5}, {"sex": "M", "n": 7}],
    }
    rebuilt = study_result({"analysis": "crosstab", "nodes": {}, "result": raw})
    assert type(rebuilt.result).__name__ == "CrosstabResult"
    assert rebuilt.result.total == 12
