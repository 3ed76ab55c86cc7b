"""Federated Cox equals pooled lifelines / statsmodels fits, whatever the split over 1–10 nodes.

Risk-set tables (strata without `node`) are built on each node's grouped event times, so the
references are fitted on the same grouped data (`tests.analyses.federate.grouped`); within-node
Cox keeps exact times. The published Freireich figures are checked at min_cell = 1 (no
grouping), where they must and do match exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lifelines.exceptions import ConvergenceError, ConvergenceWarning

from ccdp.analyses._newton import NotConverged
from ccdp.wire.errors import AnalysisError
from tests.analyses.data import cohort, freireich
from tests.analyses.federate import federate, grouped, split
from tests.analyses.references import (
    assert_matches,
    lifelines_cox,
    statsmodels_breslow,
    with_node,
)

COVARIATES = ["age_at_diagnosis", "wbc_at_diagnosis", "sex", "risk_group"]
TERMS = [
    "age_at_diagnosis",
    "wbc_at_diagnosis",
    "sex[M]",
    "risk_group[low]",
    "risk_group[standard]",
]


def lifelines_check(result, cph) -> None:
    names = list(cph.params_.index)
    assert_matches(
        result,
        cph.params_.to_numpy(),
        cph.standard_errors_.to_numpy(),
        cph.log_likelihood_,
        names,
    )


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_freireich_efron_equals_lifelines_and_published(k: int) -> None:
    """Freireich et al. 1963 (6-MP vs placebo): Efron coef 1.572 (se 0.412), HR 4.82, as R
    coxph reports for these data (Venables & Ripley, MASS 4th ed., §13.3, `gehan`)."""
    df = freireich()
    frames = split(df, k, np.random.default_rng(k))
    params = {"covariates": ["arm"], "strata": "none", "reference": {"arm": "6-MP"}}
    result = federate("cox", params, frames, min_cell=1)
    lifelines_check(result, lifelines_cox(df, ["arm"]))
    (arm,) = result.coefficients
    assert arm.term == "arm[placebo]"
    assert (round(arm.coef, 3), round(arm.se, 3), round(arm.hr, 2)) == (1.572, 0.412, 4.82)
    assert (result.n, result.events) == (42, 30)
    coarse = federate("cox", params, frames)
    lifelines_check(coarse, lifelines_cox(grouped(frames, []), ["arm"]))


def test_freireich_breslow_equals_statsmodels_and_published() -> None:
    """Breslow ties: Rx coef 1.509 (se 0.410), HR 4.523; with log WBC, Rx 1.294 and log WBC
    1.604 (Kleinbaum & Klein, Survival Analysis: A Self-Learning Text, 3rd ed., ch. 3)."""
    df = freireich()
    frames = split(df, 4, np.random.default_rng(9))
    params = {"covariates": ["arm"], "strata": "none", "ties": "breslow"}
    one = federate("cox", params, frames, min_cell=1)
    two = federate("cox", {**params, "covariates": ["arm", "wbc_at_diagnosis"]}, frames, min_cell=1)
    for res, cov in ((one, ["arm"]), (two, ["arm", "wbc_at_diagnosis"])):
        x, fit = statsmodels_breslow(df, cov)
        assert_matches(res, fit.params, fit.bse, fit.llf, list(x.columns))
    assert (round(one.coefficients[0].coef, 3), round(one.coefficients[0].se, 3)) == (1.509, 0.410)
    assert round(one.coefficients[0].hr, 3) == 4.523
    assert [round(c.coef, 3) for c in two.coefficients] == [1.294, 1.604]
    x, fit = statsmodels_breslow(grouped(frames, []), ["arm"])
    coarse = federate("cox", params, frames)
    assert_matches(coarse, fit.params, fit.bse, fit.llf, list(x.columns))


@pytest.mark.parametrize("seed", range(4))
def test_unstratified_random_splits_equal_lifelines(seed: int) -> None:
    df = cohort(400, seed)
    rng = np.random.default_rng(seed)
    frames = split(df, int(rng.integers(1, 11)), rng)
    result = federate("cox", {"covariates": COVARIATES, "strata": "none"}, frames)
    cph = lifelines_cox(grouped(frames, []), COVARIATES)
    lifelines_check(result, cph)
    assert result.converged and [c.term for c in result.coefficients] == TERMS
    lr = cph.log_likelihood_ratio_test()
    assert result.lr_chi2 == pytest.approx(lr.test_statistic, rel=1e-9)
    assert (result.lr_df, result.lr_p) == (lr.degrees_freedom, pytest.approx(lr.p_value, rel=1e-6))
    assert (result.n, result.events) == (400, int(df["os_event"].sum()))


@pytest.mark.parametrize("seed", range(3))
def test_unstratified_breslow_equals_statsmodels(seed: int) -> None:
    df = cohort(300, 20 + seed)
    rng = np.random.default_rng(seed)
    frames = split(df, int(rng.integers(1, 11)), rng)
    result = federate(
        "cox", {"covariates": COVARIATES, "strata": "none", "ties": "breslow"}, frames
    )
    x, fit = statsmodels_breslow(grouped(frames, []), COVARIATES)
    assert_matches(result, fit.params, fit.bse, fit.llf, list(x.columns))


@pytest.mark.parametrize("seed", range(4))
def test_stratified_by_node_equals_lifelines_with_node_strata(seed: int) -> None:
    df = cohort(400, 40 + seed)
    rng = np.random.default_rng(seed)
    frames = split(df, int(rng.integers(1, 11)), rng)
    result = federate("cox", {"covariates": COVARIATES}, frames)
    assert result.strata == "node"
    lifelines_check(result, lifelines_cox(with_node(frames), COVARIATES, strata=["node"]))


def test_stratified_by_node_breslow_equals_statsmodels() -> None:
    df = cohort(300, 50)
    frames = split(df, 6, np.random.default_rng(50))
    result = federate("cox", {"covariates": COVARIATES, "ties": "breslow"}, frames)
    x, fit = statsmodels_breslow(with_node(frames), COVARIATES, strata=["node"])
    assert_matches(result, fit.params, fit.bse, fit.llf, list(x.columns))


@pytest.mark.parametrize(
    "strata", [["sex"], ["node", "sex"], ["sex", "risk_group"]], ids=lambda s: "+".join(s)
)
def test_variable_strata_equal_lifelines_with_same_strata(strata: list[str]) -> None:
    df = cohort(400, 60)
    frames = split(df, 5, np.random.default_rng(60))
    cov = ["age_at_diagnosis", "wbc_at_diagnosis"]
    result = federate("cox", {"covariates": cov, "strata": strata}, frames)
    # within nodes (`node` among the strata) times stay exact; else grouped within each stratum
    ref = with_node(frames) if "node" in strata else grouped(frames, strata)
    lifelines_check(result, lifelines_cox(ref, cov, strata=strata))


def test_reference_level_and_week_grid() -> None:
    df = cohort(300, 70)
    frames = split(df, 3, np.random.default_rng(70))
    params = {
        "covariates": ["risk_group", "relapsed"],
        "strata": "none",
        "reference": {"risk_group": "low"},
        "time_unit": "week",
    }
    result = federate("cox", params, frames)
    grid = grouped(frames, [], unit="week")
    cph = lifelines_cox(grid, ["risk_group", "relapsed"], reference={"risk_group": "low"})
    lifelines_check(result, cph)
    assert [c.term for c in result.coefficients][:2] == ["risk_group[high]", "risk_group[standard]"]


def test_result_forms() -> None:
    df = cohort(200, 80)
    result = federate("cox", {"covariates": COVARIATES}, split(df, 2, np.random.default_rng(0)))
    frame = result.to_frame()
    assert list(frame.index) == TERMS
    assert list(frame.columns) == ["coef", "se", "hr", "ci_low", "ci_high", "p"]
    np.testing.assert_allclose(frame["hr"], np.exp(frame["coef"]))
    text = str(result)
    assert "Cox proportional hazards" in text and "Risk group: standard" in text
    assert "n = 200" in text


def test_bad_requests_are_refused_with_reasons() -> None:
    df = cohort(100, 90)
    frames = split(df, 2, np.random.default_rng(0))
    with pytest.raises(AnalysisError, match="reference: 'none' is not a level of sex"):
        federate("cox", {"covariates": ["sex"], "reference": {"sex": "none"}}, frames)
    with pytest.raises(AnalysisError, match="singular"):
        federate("cox", {"covariates": ["relapsed", "sex"], "strata": "none"}, frames)
    with pytest.raises(AnalysisError, match="no column"):
        federate("cox", {"covariates": ["stage"]}, frames)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(20, 60), k=st.integers(1, 6))
def test_heavy_ties_any_split_equals_lifelines(seed: int, n: int, k: int) -> None:
    """Times on a coarse grid (many tied events across nodes) and any split: Efron ties pool
    exactly only if every node's tied-event sums reach the coordinator, which is what we check."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.integers(0, 2, n).astype(float)
    time = rng.integers(1, 8, n).astype(float)
    event = (rng.random(n) < 0.7).astype(int)
    assume(event.sum() >= 5 and x2.std() > 0)
    cov = ["age_at_diagnosis", "relapsed"]  # view variables standing in for x1, x2
    df = pd.DataFrame({"os_time": time, "os_event": event, cov[0]: x1, cov[1]: x2})
    frames = split(df, k, rng)
    reference = grouped(frames, [])
    try:
        result = federate("cox", {"covariates": cov, "strata": "none"}, frames)
    except NotConverged:
        # ccdp releases no unconverged estimate; lifelines must find no estimate either
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            with pytest.raises((ConvergenceError, ConvergenceWarning)):
                lifelines_cox(reference, cov)
        return
    lifelines_check(result, lifelines_cox(reference, cov))


def test_node_parts_declare_records_and_risk_set_rows_hold_min_cell() -> None:
    """Unstratified Cox: each risk-set row counts >= min_cell records (its (stratum, time)
    group), and a `model` part declares the n rows and the parameter count for the gate;
    within-node Cox declares the same model part, exact times."""
    from ccdp.analyses import registry
    from ccdp.analyses.node_data import FrameData

    df = cohort(300, 96)
    cox = registry.get("cox")
    design = {
        "terms": ["age_at_diagnosis"],
        "columns": [{"var": "age_at_diagnosis", "center": 9.0}],
        "levels": {},
    }
    request = {"step": "fit", "design": design, "beta": [0.0]}
    for strata in ("none", "node"):
        params = cox.params_model.model_validate(
            {"covariates": ["age_at_diagnosis"], "strata": strata}
        )
        parts = cox.local(FrameData(df), params, request, {}).parts
        model = parts["model"]
        assert (model.n, model.n_params) == (300, 1) and model.records is not None
        assert model.records.union().size == 300
        assert model.levels == {}  # no categorical term: nothing for the level rule
    table = cox.local(
        FrameData(df),
        cox.params_model.model_validate({"covariates": ["age_at_diagnosis"], "strata": ["sex"]}),
        request,
        {},
    ).parts["risk_sets"]
    sets = table.records.sets(len(table))
    assert min(s.size for s in sets) >= 5 and sum(s.size for s in sets) == 300
    assert len(table) < df.groupby("sex")["os_time"].nunique().sum()


def test_iteration_limit_releases_no_estimate() -> None:
    """Stopping Newton early (max_iter: 2) gives nothing: an unconverged estimate is refused."""
    df = cohort(200, 95)
    with pytest.raises(NotConverged, match="did not converge within max_iter = 2"):
        federate(
            "cox", {"covariates": COVARIATES, "max_iter": 2}, split(df, 2, np.random.default_rng(0))
        )
