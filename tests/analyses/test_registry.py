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
