"""The one list of analysis variables: disclosure classes, declared levels, the role check."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ccdp.analyses import registry
from ccdp.cohort.variables import check_variables, variable_problem
from ccdp.cohort.view import declared_levels, view_variables

IDENTIFIERS = [n for n, v in view_variables().items() if v.identifier]


def test_every_variable_has_a_class_and_numbers_and_dates_a_band() -> None:
    for v in view_variables().values():
        assert v.var_class in ("identifier", "categorical", "numeric", "time", "date")
        if v.var_class == "date" or v.name in ("age_at_diagnosis", "age_years"):
            assert v.band and view_variables()[v.band].var_class == "categorical", v.name
    assert set(IDENTIFIERS) == {"patient_id", "tumour_id", "tumour_seq", "specimen_id"}


def test_declared_levels_come_from_the_code_lists() -> None:
    assert declared_levels("sex") == {"male", "female", "unknown"}
    assert declared_levels("os_event") == {"0", "1"}
    assert {"I", "XII"} <= declared_levels("iccc_group") and len(
        declared_levels("iccc_group")
    ) == 12
    assert "FR" in declared_levels("country") and "9836" in declared_levels("morphology")
    assert "2005-2009" in declared_levels("diagnosis_period")
    assert declared_levels("arm") is None and declared_levels("stage") is None


PARAMS = {
    "count": lambda v: {"by": [v]},
    "crosstab": lambda v: {"by": [v]},
    "km": lambda v: {"by": [v]},
    "logrank": lambda v: {"by": [v]},
    "cox": lambda v: {"covariates": [v]},
    "logistic": lambda v: {"outcome": v},
    "poisson": lambda v: {"outcome": "os", "covariates": [v]},
}


@pytest.mark.parametrize("analysis", sorted(PARAMS))
@pytest.mark.parametrize("name", IDENTIFIERS)
def test_identifiers_are_refused_by_every_analysis(analysis: str, name: str) -> None:
    model = registry.get(analysis).params_model
    with pytest.raises(ValidationError, match="identifiers never leave the node"):
        model.model_validate(PARAMS[analysis](name))


def test_cox_strata_refuse_identifiers_and_numbers() -> None:
    model = registry.get("cox").params_model
    with pytest.raises(ValidationError, match="identifier"):
        model.model_validate({"covariates": ["sex"], "strata": ["node", "patient_id"]})
    with pytest.raises(ValidationError, match="use its band 'age_group'"):
        model.model_validate({"covariates": ["sex"], "strata": ["age_years"]})
    model.model_validate({"covariates": ["sex"], "strata": ["node", "iccc_group"]})


@pytest.mark.parametrize(
    ("name", "band"),
    [("age_at_diagnosis", "age_group"), ("diagnosis_date", "diagnosis_period")],
)
def test_numbers_and_dates_group_only_through_their_band(name: str, band: str) -> None:
    assert f"use its band {band!r}" in (variable_problem(name, "group") or "")
    assert variable_problem(band, "group") is None


def test_models_take_numbers_and_categories_but_never_dates() -> None:
    assert variable_problem("wbc_at_diagnosis", "covariate") is None
    assert variable_problem("time_to_relapse", "covariate") is None
    assert "date variable" in (variable_problem("first_relapse_date", "covariate") or "")
    assert "binary" in (variable_problem("sex", "binary") or "")
    assert variable_problem("relapsed", "binary") is None


def test_problems_are_listed_together_with_a_did_you_mean() -> None:
    with pytest.raises(ValueError) as err:
        check_variables(["sexx", "patient_id", "sex", "sex"])
    text = str(err.value)
    assert "did you mean 'sex'" in text and "identifier" in text and "named twice" in text
