"""Federated logistic and Poisson regression equal statsmodels' GLM on the pooled data."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from pydantic import ValidationError

from ccdp.analyses.event_data import coarsen
from ccdp.wire.errors import AnalysisError
from tests.analyses.data import cohort, freireich
from tests.analyses.federate import federate, split
from tests.analyses.references import dummies

COVARIATES = ["age_at_diagnosis", "wbc_at_diagnosis", "sex", "risk_group"]


def statsmodels_glm(df, y, covariates, family, offset=None, reference=None):
    x = sm.add_constant(dummies(df, covariates, reference), has_constant="add")
    x = x.rename(columns={"const": "(Intercept)"})
    return x, sm.GLM(df[y], x, family=family, offset=offset).fit(tol=1e-13)


def assert_glm_matches(result, x, fit) -> None:
    assert [c.term for c in result.coefficients] == list(x.columns)
    np.testing.assert_allclose(
        [c.coef for c in result.coefficients], fit.params, rtol=1e-8, atol=1e-9
    )
    np.testing.assert_allclose([c.se for c in result.coefficients], fit.bse, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        [c.estimate for c in result.coefficients], np.exp(fit.params), rtol=1e-8
    )
    ci = np.exp(fit.conf_int().to_numpy())
    np.testing.assert_allclose([c.ci_low for c in result.coefficients], ci[:, 0], rtol=1e-7)
    np.testing.assert_allclose([c.ci_high for c in result.coefficients], ci[:, 1], rtol=1e-7)
    np.testing.assert_allclose(
        [c.p for c in result.coefficients], fit.pvalues, rtol=1e-6, atol=1e-300
    )
    assert result.deviance == pytest.approx(fit.deviance, rel=1e-10)
    assert result.null_deviance == pytest.approx(fit.null_deviance, rel=1e-10)
    assert result.lr_df == fit.df_model
    assert result.lr_chi2 == pytest.approx(fit.null_deviance - fit.deviance, rel=1e-8, abs=1e-9)
    assert result.loglik == pytest.approx(fit.llf, rel=1e-10)
    assert result.aic == pytest.approx(fit.aic, rel=1e-10)
    assert (result.n, result.df_resid) == (fit.nobs, fit.df_resid)
    assert result.converged


@pytest.mark.parametrize("seed", range(4))
def test_logistic_random_splits_equal_statsmodels(seed: int) -> None:
    df = cohort(500, seed)
    rng = np.random.default_rng(seed)
    frames = split(df, int(rng.integers(1, 11)), rng)
    result = federate("logistic", {"outcome": "os_event", "covariates": COVARIATES}, frames)
    x, fit = statsmodels_glm(df, "os_event", COVARIATES, sm.families.Binomial())
    assert_glm_matches(result, x, fit)


def test_logistic_on_freireich_and_reference_level() -> None:
    df = freireich()
    params = {"outcome": "os", "covariates": ["wbc_at_diagnosis", "sex"]}
    result = federate("logistic", params, split(df, 3, np.random.default_rng(3)))
    x, fit = statsmodels_glm(df, "os_event", ["wbc_at_diagnosis", "sex"], sm.families.Binomial())
    assert_glm_matches(result, x, fit)
    df = cohort(400, 9)
    ref = {"risk_group": "standard"}
    params = {"outcome": "efs_event", "covariates": ["risk_group"], "reference": ref}
    result = federate("logistic", params, split(df, 5, np.random.default_rng(9)))
    x, fit = statsmodels_glm(df, "efs_event", ["risk_group"], sm.families.Binomial(), reference=ref)
    assert_glm_matches(result, x, fit)
    terms = ["(Intercept)", "risk_group[high]", "risk_group[low]"]
    assert [c.term for c in result.coefficients] == terms


def test_separated_outcome_is_refused_not_reported() -> None:
    """All placebo patients relapsed (Freireich): the placebo odds ratio is infinite."""
    with pytest.raises(AnalysisError, match="separat"):
        federate("logistic", {"outcome": "os", "covariates": ["arm"]}, [freireich()])


@pytest.mark.parametrize("seed", range(4))
def test_poisson_rate_ratios_with_person_time_equal_statsmodels(seed: int) -> None:
    df = cohort(500, 10 + seed)
    rng = np.random.default_rng(seed)
    frames = split(df, int(rng.integers(1, 11)), rng)
    result = federate("poisson", {"outcome": "os", "covariates": COVARIATES}, frames)
    x, fit = statsmodels_glm(
        df, "os_event", COVARIATES, sm.families.Poisson(), offset=np.log(df["os_time"])
    )
    assert_glm_matches(result, x, fit)


def test_poisson_counts_and_month_grid() -> None:
    rng = np.random.default_rng(5)
    df = cohort(400, 5)
    # counts in a view variable's column (`relapsed` is a count role's binary; the values here
    # are Poisson draws, which the node checks only as non-negative numbers)
    df["relapsed"] = rng.poisson(np.exp(0.5 + 0.3 * (df["sex"] == "M")))
    result = federate(
        "poisson",
        {"outcome": "relapsed", "covariates": ["sex", "age_at_diagnosis"]},
        split(df, 4, rng),
    )
    x, fit = statsmodels_glm(df, "relapsed", ["sex", "age_at_diagnosis"], sm.families.Poisson())
    assert_glm_matches(result, x, fit)
    monthly = federate(
        "poisson",
        {"outcome": "efs", "covariates": ["risk_group"], "time_unit": "month"},
        split(df, 4, rng),
    )
    pt = coarsen(df["efs_time"].to_numpy(), "month")
    x, fit = statsmodels_glm(
        df, "efs_event", ["risk_group"], sm.families.Poisson(), offset=np.log(pt)
    )
    assert_glm_matches(monthly, x, fit)


def test_rows_without_person_time_are_left_out() -> None:
    df = cohort(300, 6)
    df.loc[:9, "os_time"] = 0.0
    result = federate(
        "poisson", {"outcome": "os", "covariates": ["sex"]}, split(df, 3, np.random.default_rng(0))
    )
    kept = df[df["os_time"] > 0]
    x, fit = statsmodels_glm(
        kept, "os_event", ["sex"], sm.families.Poisson(), offset=np.log(kept["os_time"])
    )
    assert_glm_matches(result, x, fit)


def test_result_forms_and_errors() -> None:
    df = cohort(300, 7)
    frames = split(df, 2, np.random.default_rng(0))
    result = federate("logistic", {"outcome": "os_event", "covariates": ["risk_group"]}, frames)
    text = str(result)
    assert "Logistic regression of OS event (death)" in text and "Risk group: standard" in text
    assert "OR" in text and "deviance" in text
    frame = result.to_frame()
    assert list(frame.columns) == ["coef", "se", "estimate", "ci_low", "ci_high", "p"]
    assert result.plot().axes[0].get_xlabel() == "Odds ratio (95% CI, log scale)"
    with pytest.raises(ValidationError, match="cannot be a binary"):
        federate("logistic", {"outcome": "os_time", "covariates": ["sex"]}, frames)
    with pytest.raises(AnalysisError, match="must be 0/1"):
        federate(
            "logistic",
            {"outcome": "relapsed", "covariates": ["sex"]},
            [f.assign(relapsed=2) for f in frames],
        )
    bad = [f.assign(os_event=0) for f in frames]
    with pytest.raises(AnalysisError, match="one value only"):
        federate("logistic", {"outcome": "os_event"}, bad)
